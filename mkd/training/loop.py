"""The training loop: teacher fine-tuning and student distillation, one loop for both.

A lean loop rather than transformers' Trainer, because distillation here reads cached teacher logits by
example index, pads per batch over length-grouped batches, and must resume bit-exactly mid-epoch after a
kill; all of that is a few lines here and a fight with Trainer's sampler and callbacks. `accelerate` wraps
the model and optimizer, so mixed precision (`mixed_precision: bf16|fp16`) works where a GPU exists. One
process trains one model: a multi-process launch is refused (its LR schedule, evaluation and writes would
not be one run's), and the grid scales out by running cells side by side, one process per device.

A run has a budget in optimizer steps (`max_steps`), evaluates on the training locales' dev rows every
`eval_every` steps and stops early after `patience` evaluations without improvement (never before `min_steps`),
keeping the best-on-dev weights: every variant trains until its dev accuracy stops rising, under the same budget, whatever its data size.

Checkpoints hold model, optimizer, scheduler, RNG state, the position in the epoch and the early-stopping
state (with the best weights so far beside them), are written atomically every `checkpoint_every` steps (0: at
each evaluation) and when training ends, and a restarted run continues from the last one to the same result an
uninterrupted run gives. Not at every evaluation: a checkpoint of a 6-layer e5 student with its optimizer is
~220-410 MB, and writing one per evaluation cost a cpu grid cell 10-17 s (benchmark/cell_overheads.md).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from mkd.models import heads
from mkd.core.atomic import atomic_path
from mkd.core.errors import TrainingError
from mkd.models.features import length_grouped_batches, pad_batch
from mkd.training.losses import (
    LossInputs, Objective, combined_loss, parse_objective, reads_of, validate_objective,
)
from mkd.training.recipe import Recipe

log = logging.getLogger("mkd.training.loop")


MULTI_PROCESS_REFUSED = ("mkd trains one model per process; a multi-process launch (accelerate launch / torchrun, "
                         "WORLD_SIZE > 1) is not supported. Run cells side by side instead, one `dvc repro "
                         "--single-item cell@...` per device (CUDA_VISIBLE_DEVICES=<i>)")


@dataclass(frozen=True)
class TrainConfig(Recipe):
    """fit's settings: the recipe params.yaml gives (mkd.training.recipe.Recipe's fields) and what a run adds to it."""

    max_grad_norm: float = 1.0
    objective: dict = field(default_factory=lambda: {"ce": 1.0})  # loss name -> weight (mkd.training.losses)
    loss_options: dict = field(default_factory=dict)                # loss name -> its options, e.g. temperature
    seed: int = 0
    eval_batch_size: int = 128
    group_by_length: bool = True


def train_config(section: dict, objective, seed: int) -> TrainConfig:
    """fit's config from a params section (teacher or student) and an objective (an Objective, or {loss: weight})."""
    if not isinstance(objective, Objective):
        objective = parse_objective(objective, "objective")
    return TrainConfig.from_section(section, objective=dict(objective.weights), loss_options=objective.options, seed=seed)


@dataclass
class EncodedSet:
    """Token ids of a split, their labels and locales, in a fixed order."""

    ids: list[list[int]]
    labels: torch.Tensor
    locales: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _KeepWriteError:
    """The file torch.save writes to. torch turns a failed write (full disk) into a RuntimeError that hides
    the cause ("unexpected pos ..."); this keeps the OSError (ENOSPC, EFBIG) so `_save` raises that instead."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        try:
            return self.fh.flush()
        except OSError as e:
            self.error = e
            raise


def _save(obj, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        out = _KeepWriteError(fh)
        try:
            torch.save(obj, out)
        except RuntimeError:
            if out.error is None:
                raise
            raise out.error from None


def dev_accuracy(model, dev: EncodedSet, pad_id: int, batch_size: int = 128, device=None) -> float:
    """Locale-averaged dev accuracy, the model-selection criterion (every language counts the same)."""
    from mkd.evaluation.predict import predict_logits

    preds = predict_logits(model, dev.ids, pad_id, batch_size, device).argmax(-1)
    correct = (preds == dev.labels).float()
    per_locale = {}
    for i, loc in enumerate(dev.locales):
        per_locale.setdefault(loc, []).append(i)
    return float(sum(correct[idx].mean() for idx in per_locale.values()) / len(per_locale))


def configure_optimizer(model, cfg: TrainConfig, device) -> torch.optim.Optimizer:
    """AdamW over four groups: body and head (head at cfg.head_lr), each with and without weight decay.

    The head has its own learning rate because a fresh classifier on small hidden states (e5's mean |h| is
    about 0.16) barely moves at a body's learning rate. Frozen word embeddings get no gradient at all.
    """
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    head_lr = cfg.lr if cfg.head_lr is None else cfg.head_lr
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if cfg.freeze_word_embeddings and heads.is_word_embedding(name):
            param.requires_grad_(False)
            continue
        key = (heads.is_head_parameter(name, model), any(k in name for k in no_decay))
        groups.setdefault(key, []).append(param)
    param_groups = [
        {"params": params, "lr": head_lr if head else cfg.lr, "weight_decay": 0.0 if no_wd else cfg.weight_decay}
        for (head, no_wd), params in sorted(groups.items())
    ]
    # The fused kernel (CPU and CUDA) updates all tensors in one pass: ~10x faster than the default per-tensor loop
    # on CPU, where the embedding table dominates the optimizer step.
    return torch.optim.AdamW(param_groups, lr=cfg.lr, fused=torch.device(device).type in ("cpu", "cuda"))


def linear_schedule(optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warmup over warmup_ratio of the steps, then linear decay to 0 (transformers' schedule)."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)


def batch_loss(model, ids, mask, labels, objective: dict, *, loss_options: dict | None = None, teacher_logits=None,
               teacher_model=None, layer_map: Sequence[int] | None = None):
    """The objective on one padded batch: the student's forward pass (and the teacher's, for losses that read
    its hidden states or attention maps), then the weighted sum of the named losses. Only what the objective's
    losses read is computed. Returns (loss, {name: value})."""
    reads = reads_of(objective)
    hidden, attentions = "hidden" in reads, "attentions" in reads
    out = heads.forward(model, ids, mask, output_hidden_states=hidden, output_attentions=attentions)
    inputs = LossInputs(student_logits=out.logits.float(), labels=labels, teacher_logits=teacher_logits,
                        attention_mask=mask)
    if hidden or attentions:
        with torch.no_grad():
            t = heads.forward(teacher_model, ids, mask, output_hidden_states=hidden, output_attentions=attentions)
        if hidden:  # hidden_states[0] is the embeddings' output: layer i's is at i + 1
            inputs.student_hidden = [out.hidden_states[i + 1] for i in range(len(layer_map))]
            inputs.teacher_hidden = [t.hidden_states[j + 1] for j in layer_map]
        if attentions:
            inputs.student_attentions = list(out.attentions)
            inputs.teacher_attentions = [t.attentions[j] for j in layer_map]
    return combined_loss(objective, inputs, loss_options)


def return_attention_maps(*models) -> None:
    """Attention losses read the maps, which PyTorch's fused attention (SDPA, transformers' default) does not
    return: run these models with the eager implementation (the same function, unfused: the last digits differ)."""
    for model in models:
        if model is not None and model.config._attn_implementation != "eager":
            model.set_attn_implementation("eager")


def update(accelerator, model, optimizer, scheduler, loss, max_grad_norm: float) -> None:
    """One optimizer step from a batch's loss: backward, gradient clipping, AdamW, schedule."""
    accelerator.backward(loss)
    if max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def save_state(path: Path, model, optimizer, scheduler, progress: dict, cfg: TrainConfig) -> None:
    """A resumable checkpoint: weights, optimizer and schedule, RNG state, the position in the epoch and the
    early-stopping state."""
    _save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
           "rng": _rng_state(), "progress": progress, "config": asdict(cfg)}, path)


def load_state(path: Path, model, optimizer, scheduler) -> dict:
    """Restore what save_state wrote into model, optimizer, schedule and RNG; returns the saved progress."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["progress"]


def fit(
    model,
    train: EncodedSet,
    dev: EncodedSet,
    cfg: TrainConfig,
    *,
    pad_id: int,
    name: str,
    checkpoint_dir: Path | None = None,
    teacher_logits: torch.Tensor | None = None,
    teacher_model=None,
    layer_map: Sequence[int] | None = None,
    interrupt_at_step: int | None = None,
) -> dict:
    """Train `model` in place for at most `cfg.max_steps` optimizer steps and leave it holding the best-on-dev
    weights. Every `cfg.eval_every` steps (and at the budget's end) it evaluates on `dev`; after `cfg.patience`
    evaluations without a new best it stops (patience 0: never early; never before `cfg.min_steps`). Returns training statistics.

    `name` names the run in every message (e.g. the grid cell). `teacher_logits[i]` belongs to train row i.
    `interrupt_at_step` returns before that step, as a kill would (tests; the checkpoint stays).
    """
    from accelerate import Accelerator

    from mkd.core.device import compute_device

    objective = validate_objective(cfg.objective)
    reads = reads_of(objective)
    if "teacher_logits" in reads and teacher_logits is None:
        raise TrainingError(f"{name}: the objective {objective} needs teacher logits; none were given")
    if teacher_logits is not None and len(teacher_logits) != len(train):
        raise TrainingError(f"{name}: {len(teacher_logits)} teacher logits for {len(train)} training rows")
    if reads & {"hidden", "attentions"} and (teacher_model is None or layer_map is None):
        raise TrainingError(f"{name}: the objective {objective} reads the teacher's hidden states or attention maps; "
                            "it needs the teacher model and the layer map")
    if "attentions" in reads:
        return_attention_maps(model, teacher_model)

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=compute_device().type == "cpu")
    if accelerator.num_processes > 1:
        raise TrainingError(f"{name}: {MULTI_PROCESS_REFUSED}")
    device = accelerator.device
    torch.manual_seed(cfg.seed)

    lengths = [len(s) for s in train.ids]
    optimizer = configure_optimizer(model, cfg, device)
    scheduler = linear_schedule(optimizer, cfg, cfg.max_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    if teacher_model is not None:
        teacher_model = teacher_model.to(device).eval()

    # Everything a resumed run needs to continue exactly where the checkpoint was taken. `window_*`: the
    # training loss since the last evaluation; `stopped`: why training ended (None while it runs).
    progress = {"epoch": 0, "batch": 0, "step": 0, "best_dev": -1.0, "best_step": 0, "evals_since_best": 0,
                "history": [], "train_seconds": 0.0, "examples": 0, "window_loss": 0.0, "window_n": 0, "stopped": None}
    state_path = best_path = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        state_path, best_path = checkpoint_dir / "state.pt", checkpoint_dir / "best.pt"
        if state_path.exists():
            progress = load_state(state_path, accelerator.unwrap_model(model), optimizer, scheduler)
            log.info("%s: resuming from %s at step %d", name, state_path, progress["step"])

    best_state = None
    best_on_disk = True  # best.pt holds best_state (nothing new to write since the last checkpoint)

    def checkpoint() -> None:
        """best.pt first, then state.pt: a state on disk never names a best that is not on disk."""
        nonlocal best_on_disk
        if state_path is None or not accelerator.is_main_process:
            return
        if not best_on_disk and best_state is not None:
            _save(best_state, best_path)
        best_on_disk = True
        save_state(state_path, accelerator.unwrap_model(model), optimizer, scheduler, progress, cfg)

    def evaluate() -> None:
        """Dev accuracy now: one point of the learning curve; a new best keeps its weights; patience counts."""
        nonlocal best_state, best_on_disk
        acc = dev_accuracy(accelerator.unwrap_model(model), dev, pad_id, cfg.eval_batch_size, device)
        model.train()
        improved = acc > progress["best_dev"]
        if improved:
            progress.update(best_dev=acc, best_step=progress["step"], evals_since_best=0)
            best_state = {k: v.detach().clone().cpu() for k, v in accelerator.unwrap_model(model).state_dict().items()}
            best_on_disk = False  # written with the next checkpoint
        else:
            progress["evals_since_best"] += 1
        train_loss = progress["window_loss"] / max(1, progress["window_n"])
        progress["history"].append({"step": progress["step"], "epoch": progress["examples"] / len(train),
                                    "train_loss": train_loss, "dev_accuracy": acc})
        progress.update(window_loss=0.0, window_n=0)
        if progress["step"] >= cfg.max_steps:
            progress["stopped"] = "budget"
        elif cfg.patience and progress["evals_since_best"] >= cfg.patience and progress["step"] >= cfg.min_steps:
            progress["stopped"] = "patience"
        log.info("%s: step %d/%d (epoch %.1f) loss %.4f dev accuracy %.4f%s%s", name, progress["step"], cfg.max_steps,
                 progress["examples"] / len(train), train_loss, acc, " (best)" if improved else "",
                 f"; stopped: {progress['stopped']}" if progress["stopped"] else "")

    t_start = time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=progress["step"], desc=name, unit="step", leave=False, mininterval=5)
    try:  # the bar is cleared on an error too, so the error message starts its own line
        while progress["stopped"] is None:
            epoch = progress["epoch"]
            batches = length_grouped_batches(lengths, cfg.batch_size, seed=cfg.seed, epoch=epoch, group_by_length=cfg.group_by_length)
            model.train()
            for b in range(progress["batch"], len(batches)):
                if interrupt_at_step is not None and progress["step"] >= interrupt_at_step:
                    return {"interrupted_at_step": progress["step"]}
                batch = batches[b]
                progress["batch"] = b + 1
                progress["step"] += 1
                ids, mask = pad_batch([train.ids[i] for i in batch], pad_id)
                ids, mask = ids.to(device), mask.to(device)
                index = torch.as_tensor(batch)
                with accelerator.autocast():
                    loss, parts = batch_loss(
                        model, ids, mask, train.labels[index].to(device), objective, loss_options=cfg.loss_options,
                        teacher_logits=None if teacher_logits is None else teacher_logits[index].to(device),
                        teacher_model=teacher_model, layer_map=layer_map)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"{name}: the loss became {loss.item()} at step {progress['step']} (epoch {epoch + 1}) "
                        f"(parts: {parts}). Nothing of this run was saved as a result; lower the learning rate "
                        f"(now {cfg.lr}) or check the inputs, then re-run this cell."
                    )
                update(accelerator, model, optimizer, scheduler, loss, cfg.max_grad_norm)
                progress["window_loss"] += float(loss.detach()) * len(batch)
                progress["window_n"] += len(batch)
                progress["examples"] += len(batch)
                bar.update(1)
                evaluation_due = progress["step"] % cfg.eval_every == 0 or progress["step"] >= cfg.max_steps
                checkpoint_due = (progress["step"] % cfg.checkpoint_every == 0 if cfg.checkpoint_every
                                  else evaluation_due)
                if evaluation_due or checkpoint_due:
                    progress["train_seconds"] += time.perf_counter() - t_start
                    if evaluation_due:
                        evaluate()
                    t_start = time.perf_counter()  # checkpoint writes count as training time, evaluations not
                    # The last checkpoint is the finished run: a crash while predicting does not train it again.
                    if checkpoint_due or progress["stopped"]:
                        checkpoint()
                    if progress["stopped"]:
                        break
            else:
                progress.update(epoch=epoch + 1, batch=0)
    finally:
        bar.close()

    if best_state is None and best_path is not None and best_path.exists():
        best_state = torch.load(best_path, map_location="cpu", weights_only=True)
    unwrapped = accelerator.unwrap_model(model)
    if best_state is not None:
        unwrapped.load_state_dict(best_state)
    secs = progress["train_seconds"]
    return {
        "best_dev_accuracy": progress["best_dev"],
        "best_step": progress["best_step"],
        "history": progress["history"],
        "steps": progress["step"],
        "epochs": progress["examples"] / len(train),
        "stopped": progress["stopped"],
        "train_examples_seen": progress["examples"],
        "train_seconds": secs,
        "train_examples_per_second": progress["examples"] / secs if secs > 0 else None,
    }
