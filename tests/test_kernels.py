"""The kernels' instruction set is a parameter (`cpu_isa`, mkd/core/kernels.py): the CLI pins it before torch
starts, and provenance records the set the kernels really used."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _capability(code: str, cwd=None) -> str:
    r = subprocess.run([sys.executable, "-c", code + "\nimport torch; print(torch.backends.cpu.get_cpu_capability())"],
                       cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def widest():
    widest = _capability("")
    if widest not in ("AVX2", "AVX512"):
        pytest.skip(f"torch runs {widest} kernels here: no AVX2 to pin (not an x86-64 machine with AVX2)")
    return widest


def test_the_cli_pins_the_profile_s_instruction_set_before_torch_starts(tmp_path, widest):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    run = "from mkd.cli import main; assert main(['-q', 'validate', '--profile', 'smoke']) == 0"
    assert _capability(run, cwd=tmp_path) == "AVX2"            # mkd/profiles/smoke.yaml: cpu_isa avx2
    assert _capability("from mkd.cli import main; assert main(['-q', 'validate']) == 0", cwd=tmp_path) == widest  # paper: null


def test_provenance_records_the_kernels_in_use(widest):
    code = ("from mkd.core.kernels import pin_cpu_isa; pin_cpu_isa('avx2')\n"
            "from mkd.pipeline.provenance import provenance; print(provenance()['cpu_kernels'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "AVX2 (oneDNN <= AVX2)"
