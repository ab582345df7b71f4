"""A model's logits for a list of token-id sequences: the one forward pass every evaluation uses (the training
loop's dev accuracy, teachers' logits, each cell's predictions)."""

from __future__ import annotations

from typing import Sequence

import torch

from mkd.models.features import length_grouped_batches, pad_batch


@torch.no_grad()
def predict_logits(model, encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int = 128, device=None) -> torch.Tensor:
    """Logits for every sequence, in input order, computed on the model's own device (or `device`), under the
    model's pooling. Batches are length-sorted to waste little on padding."""
    from mkd.models.heads import forward

    model.eval()
    if device is None:
        device = next(model.parameters()).device
    out = torch.empty(len(encoded), model.config.num_labels)
    lengths = [len(s) for s in encoded]
    for batch in length_grouped_batches(lengths, batch_size, seed=0, epoch=0, shuffle=False):
        ids, mask = pad_batch([encoded[i] for i in batch], pad_id)
        logits = forward(model, ids.to(device), mask.to(device)).logits
        out[torch.as_tensor(batch)] = logits.float().cpu()
    return out
