"""The package layout is the import graph (mkd/__init__.py lists it): every import between mkd's packages runs
downward, so a lower layer never needs a higher one, and the analysis stays free of torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

MKD = Path(__file__).resolve().parents[1] / "mkd"
LAYERS = ["core", "data", "models", "axes", "evaluation", "training", "analysis", "config", "pipeline", "studies", "cli"]


def _group(module: str) -> str | None:
    """mkd.models.students -> models; mkd.axes -> axes; mkd -> None (the package itself: its version)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path, module: str) -> list[str]:
    """Every mkd module `path` imports, at the top or inside a function (lazy imports count: they run too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module.rsplit(".", node.level if path.name != "__init__.py" else node.level - 1)[0]
            found.append(f"{base}.{node.module}" if node.module else base)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mkd":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "mkd"]
    return found


def _modules():
    for path in sorted(MKD.rglob("*.py")):
        if "metric_modules" in path.parts:  # evaluate modules, loaded by path, not imported
            continue
        module = ".".join(("mkd", *path.relative_to(MKD).with_suffix("").parts)).removesuffix(".__init__")
        yield path, module


def test_every_module_belongs_to_a_layer():
    assert {g for _, m in _modules() if (g := _group(m))} == set(LAYERS)


def test_imports_between_packages_run_only_downward():
    upward = []
    for path, module in _modules():
        here = _group(module)
        for target in _imports(path, module):
            there = _group(target)
            if here and there and here != there and LAYERS.index(there) > LAYERS.index(here):
                upward.append(f"{module} imports {target} ({here} is below {there})")
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The check above can fail: an import of the pipeline from the models is found."""
    bad = tmp_path / "students.py"
    bad.write_text("def f():\n    from mkd.pipeline.grid import Cell\n")
    assert [_group(t) for t in _imports(bad, "mkd.models.students")] == ["pipeline"]


def test_the_analysis_and_validation_import_no_torch():
    """`mkd analyze` and `mkd validate` run where torch is slow to import or absent from the path."""
    code = ("import sys; import mkd.analysis.report, mkd.config, mkd.pipeline.grid; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
