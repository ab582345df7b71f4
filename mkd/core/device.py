"""Where the models compute: one answer for every stage, so none is left on the host CPU of a GPU machine.

The training loop (through accelerate), the frozen probe's encoder and fit, the teachers' logits and each cell's
evaluations all ask here. At the paper's size the stages outside the loop forward ~2.5 M rows (references) and
~2 M rows (logits): hours on a host's cores, minutes on the GPU the loop uses.
"""

from __future__ import annotations


def compute_device():
    """The first CUDA device torch can see (CUDA_VISIBLE_DEVICES picks it, as fanout does per worker), else the CPU."""
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
