"""The objective and the optimiser: label-smoothed cross-entropy, Adam, learning-rate schedules.

Pure functions of tensors and numbers; the loop decides when to call them.
"""

from __future__ import annotations

import math

# Vaswani et al. (2017), sec. 5.3.
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-9


def label_smoothed_loss(logits, target, *, pad_id: int, smoothing: float):
    """Summed label-smoothed loss and summed NLL over the non-padding targets.

    logits [B,T,V], target [B,T]. The smoothing mass is spread uniformly over the
    vocabulary (Szegedy et al., 2016), as torch's cross_entropy does. Padding rows
    are dropped before the softmax, so they cost nothing. Computed in float32.
    """
    import torch

    keep = target != pad_id  # [B,T]
    lprobs = torch.log_softmax(logits[keep].float(), dim=-1)  # [N,V]
    nll = -lprobs.gather(-1, target[keep].unsqueeze(-1)).sum()
    smooth = -lprobs.sum() / lprobs.size(-1)
    return (1.0 - smoothing) * nll + smoothing * smooth, nll


def build_optimizer(model, *, lr: float, weight_decay: float, device_type: str):
    """Adam (AdamW when weight decay is set) with the Transformer's betas and eps."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    # The fused kernel is one launch for all parameters on CUDA; on the CPU the
    # default foreach implementation is as fast and bit-reproducible.
    fused = device_type == "cuda"
    return kind(
        params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay, fused=fused
    )


def lr_at(
    step: int, *, schedule: str, lr: float, warmup: int, max_updates: int, min_lr: float = 0.0
) -> float:
    """The learning rate of update `step` (1-based): linear warm-up to `lr`, then the schedule.

    inverse_sqrt: lr * sqrt(warmup / step) after warm-up (fairseq's inverse_sqrt, the
    Vaswani et al. schedule with `lr` as its peak); cosine: half a cosine from `lr`
    down to `min_lr` at `max_updates` (Loshchilov & Hutter, 2017); constant: `lr`.
    """
    step = max(step, 1)
    if warmup and step <= warmup:
        return lr * step / warmup
    if schedule == "inverse_sqrt":
        return lr * math.sqrt(max(warmup, 1) / step)
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, max_updates - warmup))
        return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    return lr


def set_lr(optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value
