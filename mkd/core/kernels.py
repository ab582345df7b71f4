"""Which CPU instruction set torch's float kernels use: a parameter (`cpu_isa`), because it changes the numbers.

ATen's vectorized kernels and oneDNN's matrix products pick the widest instruction set the CPU has, and AVX-512
sums round differently from AVX2: the smoke profile's teacher, the same code, data and threads, trains to a
first-epoch loss of 4.031835 on an AVX-512 machine and 4.031498 on an AVX2 one (measured on one Zen 4 machine
with the limits below set and unset). Virtual machines often report both as "AMD EPYC". Pinning the set makes
results computed on one come back bit for bit on the other. torch reads the limits from the environment when it
starts computing, so `pin_cpu_isa` must run before anything imports torch (the CLI does it first).
"""

from __future__ import annotations

import os

# cpu_isa value -> the environment limits torch honours: ATen's dispatch (ATEN_CPU_CAPABILITY) and oneDNN's
# (DNNL_MAX_CPU_ISA). A machine without the set runs its best narrower one (provenance records which).
CPU_ISAS: dict[str, dict[str, str]] = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2"},
    "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "DNNL_MAX_CPU_ISA": "AVX512_CORE"},
}


def pin_cpu_isa(isa: str | None) -> None:
    """Limit this process's float kernels to `isa` (None: the machine's widest). An unknown name is left to
    validation, which names the key and the choices."""
    if isa in CPU_ISAS:
        os.environ.update(CPU_ISAS[isa])


def cpu_kernels() -> str:
    """The instruction sets in use, for provenance: ATen's, and oneDNN's limit where one is set."""
    import torch

    onednn = os.environ.get("DNNL_MAX_CPU_ISA")
    return torch.backends.cpu.get_cpu_capability() + (f" (oneDNN <= {onednn})" if onednn else "")
