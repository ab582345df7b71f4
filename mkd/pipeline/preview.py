"""What a run with some `-S key=value` overrides would re-run, before it runs: `mkd exp --dry`.

`dvc exp run --dry` cannot say: it works in an empty temporary copy of the project, where nothing has run yet
(and it stops at the first stage whose input is an uncached file). `dvc repro --dry` in the project lists the
stages whose own inputs change, not the ones after them. Here the overrides are applied to params.yaml as
`dvc exp run` would apply them, `dvc status` names the stages whose inputs change, the stages that depend on
those are added from DVC's own graph, and params.yaml is put back byte for byte whatever happens.
"""

from __future__ import annotations

import json
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

from mkd.core import atomic
from mkd.core.errors import MkdError

SET_FLAGS = ("-S", "--set-param")


def set_params_of(dvc_args: list[str]) -> list[str]:
    """The `-S key=value` overrides among `dvc exp run` arguments (`-S x`, `--set-param x`, `--set-param=x`)."""
    out, take = [], False
    for arg in dvc_args:
        if take:
            out.append(arg)
            take = False
        elif arg in SET_FLAGS:
            take = True
        elif arg.startswith("--set-param="):
            out.append(arg.split("=", 1)[1])
    if take:
        raise MkdError(f"{dvc_args[-1]} needs a value, e.g. -S student.lr=1e-4")
    return out


@contextmanager
def params_applied(path: Path, overrides: list[str]):
    """params.yaml with the overrides applied (DVC's own Hydra code, as `dvc exp run -S` applies them), and put
    back as it was on leaving, also after Ctrl-C or SIGTERM."""
    from dvc.utils.hydra import apply_overrides

    original = path.read_bytes()

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        try:
            apply_overrides(str(path), overrides)
        except Exception as e:  # Hydra's grammar errors and DVC's refusals: the user's input
            raise MkdError(f"cannot apply {' '.join(overrides)} to {path}: {e} (a key {path.name} does not hold yet "
                           "is added with +key=value, one removed with ~key)") from None
        yield
    finally:
        atomic.write_bytes(path, original)
        signal.signal(signal.SIGTERM, previous)


# Stages that run on every change of params.yaml but write the same bytes whatever the values: the validation
# stamp (mkd.pipeline.stages.validate) holds no parameter, so nothing after it re-runs because it ran.
SAME_OUTPUT_STAGES = ("validate",)


def stages_that_would_run(root: Path, env: dict) -> list[str]:
    """The stages `dvc repro` in root would run: those `dvc status` reports changed, and every stage downstream
    of one of them (not of `validate`, which runs every time and rewrites the same stamp)."""
    import networkx as nx
    from dvc.repo import Repo

    r = subprocess.run(["dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise MkdError(f"`dvc status` failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    changed = {stage for stage in json.loads(r.stdout or "{}") if stage not in SAME_OUTPUT_STAGES}
    with Repo(str(root)) as repo:
        graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
        by_name = {node.addressing: node for node in graph.nodes}
        out = set(changed)
        for name in changed & by_name.keys():
            out |= {node.addressing for node in nx.ancestors(graph, by_name[name])}
    return sorted(out)


def describe(stages: list[str], cells_in_grid: int) -> str:
    from mkd.pipeline.grid import is_cell_stage

    cells = [s for s in stages if is_cell_stage(s)]
    others = [s for s in stages if not is_cell_stage(s)]
    lines = [f"would re-run {len(cells)} of {cells_in_grid} cells and {len(others)} other stage(s)"
             f"{': ' + ', '.join(others) if others else ''}"]
    lines += [f"  {c}" for c in cells]
    return "\n".join(lines)
