"""The frozen-probe floor: a linear classifier on the frozen base model's sentence embeddings.

A distilled student is only worth reporting next to what the base model gives with no fine-tuning at all.
The probe embeds every sentence with the frozen base model (mean of the last hidden states over the attention
mask, as e5 and MTEB pool), standardizes the features with the training rows' mean and spread, and fits a
multinomial logistic regression with L2 penalty by L-BFGS: the objective of scikit-learn's
`LogisticRegression(C=...)`, which MTEB's classification tasks use (here in torch, so no new dependency).
The floor gets the tuning the students get: C is chosen from `probe.c_grid` on the same dev rows the students
are selected on (`tune_probe`), so no student is flattered by an untuned baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from mkd.models.heads import mean_pool


@torch.no_grad()
def embed(model, encoded: Sequence[Sequence[int]], pad_id: int, batch_size: int = 128,
          dtype: torch.dtype = torch.float32, on_model_device: bool = False) -> torch.Tensor:
    """Mean-pooled last hidden states of a frozen encoder (an AutoModel), one row per sequence, input order, as
    `dtype` (float64: what the probe fits on, with no float32 copy beside it), on the CPU or, `on_model_device`,
    where the model computes (a probe fitted on a GPU: no host copy, 3.7 GB at the paper's size)."""
    from mkd.models.features import length_grouped_batches, pad_batch

    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(encoded), model.config.hidden_size, dtype=dtype,
                      device=device if on_model_device else "cpu")
    for batch in length_grouped_batches([len(s) for s in encoded], batch_size, seed=0, epoch=0, shuffle=False):
        ids, mask = pad_batch([encoded[i] for i in batch], pad_id)
        hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        pooled = mean_pool(hidden, mask.to(device)).float()
        out[torch.as_tensor(batch, device=out.device)] = pooled.to(out.device).to(dtype)
    return out


@dataclass
class LinearProbe:
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).argmax(-1)


def standardized(features: torch.Tensor, standardize: bool = True, device=None, in_place: bool = False):
    """(x, mean, scale): `features` as float64 on `device` (default: theirs), standardized in place by the rows'
    mean and spread (or left raw, mean 0 and scale 1, with `standardize` False). A copy, unless `in_place` and the
    features are float64 on that device already (then they become x). In place, because at the paper's size
    (598,728 rows x 768) a float64 copy is 3.7 GB: `(x - mean) / scale` would make two more."""
    device = device or features.device
    x = features.to(device=device, dtype=torch.float64, copy=not in_place)
    if standardize:
        mean, scale = x.mean(0), x.std(0, unbiased=False).clamp(min=1e-12)
        x.sub_(mean).div_(scale)
    else:
        mean = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        scale = torch.ones(x.shape[1], dtype=x.dtype, device=x.device)
    return x, mean, scale


def fit_probe(features: torch.Tensor, labels: torch.Tensor, num_labels: int, c: float = 1.0,
              max_iter: int = 100, standardize: bool = True) -> LinearProbe:
    """Multinomial logistic regression: minimize C * sum(cross-entropy) + ||W||^2 / 2 (bias unpenalized),
    scikit-learn's objective, by L-BFGS from zero weights (deterministic). `standardize` scales each feature by
    the training rows' mean and spread first (MTEB feeds the raw, L2-normalized embeddings: False)."""
    return fit_standardized(*standardized(features, standardize), labels, num_labels, c, max_iter)


def fit_standardized(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor,
                     num_labels: int, c: float = 1.0, max_iter: int = 100) -> LinearProbe:
    """fit_probe on features `standardized` already (x, on the device the fit runs on); the probe comes back on
    the CPU in float32, applying `mean` and `scale` to raw features itself."""
    y = labels.long().to(x.device)
    weight = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        # divided by n * C to keep the numbers small; the minimizer is the same
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y, reduction="mean") + \
            (weight ** 2).sum() / (2 * c * len(y))
        loss.backward()
        return loss

    opt.step(closure)
    return LinearProbe(*(t.detach().float().cpu() for t in (mean, scale, weight, bias)))


def tune_probe(features: torch.Tensor, labels: torch.Tensor, num_labels: int, c_grid: Sequence[float],
               dev_score: Callable[[LinearProbe], float], device=None,
               in_place: bool = False) -> tuple[LinearProbe, float, dict[float, float]]:
    """One probe per C of `c_grid`, fitted on `device` (default: the features'); keeps the one `dev_score` (higher
    is better) rates best, the smaller C on a tie (the stronger penalty). Returns (probe, its C, {C: dev score}).
    The features are standardized once for every C: one float64 copy, or none with `in_place` (float64 features
    the caller gives up: they are standardized where they lie)."""
    x, mean, scale = standardized(features, device=device, in_place=in_place)
    scored = {}
    best = None
    for c in sorted(float(c) for c in c_grid):
        probe = fit_standardized(x, mean, scale, labels, num_labels, c=c)
        scored[c] = dev_score(probe)
        if best is None or scored[c] > scored[best[1]]:
            best = (probe, c)
    return best[0], best[1], scored


def load_frozen_encoder(model_dir: Path):
    from transformers import AutoModel

    return AutoModel.from_pretrained(model_dir)
