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
    vocabulary (Szegedy et al., 2016), as torch's cross_entropy does. One fused
    function (below) so the [B*T,V] softmax is made once forward and once backward.
    """
    import torch

    V = logits.size(-1)
    weight = (target != pad_id).to(torch.float32).view(-1)  # [B*T]: 0 for padding
    return _smoothed_cross_entropy().apply(
        logits.reshape(-1, V), target.reshape(-1), weight, smoothing
    )


_FUNCTION = None


def _smoothed_cross_entropy():
    """The autograd Function, defined on first use so importing mtkit stays free of torch.

    Per row, with lse = logsumexp(x): nll = lse - x[target] and the smoothing term
    -mean(log_softmax(x)) = lse - mean(x), so the forward needs no [N,V] log-probs;
    the gradient is softmax(x) - (1 - eps) * onehot(target) - eps / V.
    """
    global _FUNCTION
    if _FUNCTION is not None:
        return _FUNCTION
    import torch

    class SmoothedCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, target, weight, smoothing):  # [N,V], [N], [N], float
            x = logits.float()
            lse = torch.logsumexp(x, dim=-1)  # [N]
            nll_rows = lse - x.gather(-1, target[:, None]).squeeze(-1)
            smooth_rows = lse - x.mean(dim=-1)
            loss = (weight * ((1.0 - smoothing) * nll_rows + smoothing * smooth_rows)).sum()
            nll = (weight * nll_rows).sum()
            ctx.save_for_backward(logits, target, weight, lse)
            ctx.smoothing = smoothing
            ctx.mark_non_differentiable(nll)
            return loss, nll

        @staticmethod
        def backward(ctx, grad_loss, grad_nll):
            logits, target, weight, lse = ctx.saved_tensors
            eps, V = ctx.smoothing, logits.size(-1)
            grad = torch.softmax(logits.float(), dim=-1)  # [N,V]
            grad.scatter_add_(-1, target[:, None], grad.new_full((len(target), 1), eps - 1.0))
            scale = (weight * grad_loss)[:, None]  # [N,1]
            # grad * scale - scale * eps / V in one pass over [N,V].
            torch.addcmul(scale * (-eps / V), grad, scale, out=grad)
            return grad.to(logits.dtype), None, None, None

    _FUNCTION = SmoothedCrossEntropy
    return _FUNCTION


def build_optimizer(model, *, lr: float, weight_decay: float):
    """Adam (AdamW when weight decay is set) with the Transformer's betas and eps."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if weight_decay else torch.optim.Adam
    # The fused kernel updates all parameters in one pass: one launch on CUDA, and on
    # the CPU about 4x faster than the foreach implementation; it can also skip a step
    # on the device (found_inf) without waiting for the GPU.
    return kind(
        params, lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=weight_decay, fused=True
    )


# Schedules that decay to min_lr at the end of the budget: cosine and linear.
DECAYING = ("cosine", "linear")


def budget_fraction(*, step: int, max_updates: int, seconds: float, max_time: float) -> float:
    """How much of the run's budget is spent, 0..1: the larger of updates / --max-updates
    and training seconds / --max-time (whichever budget binds first); 0 without either."""
    shares = [0.0]
    if max_updates:
        shares.append(step / max_updates)
    if max_time:
        shares.append(seconds / max_time)
    return min(1.0, max(shares))


def decay_progress(
    *,
    step: int,
    warmup: int,
    max_updates: int,
    seconds: float = 0.0,
    max_time: float = 0.0,
    warmup_seconds: float = 0.0,
) -> float:
    """How far the decay after warm-up has come, 0..1: the larger of the updates' share
    since warm-up, (step - warmup) / (max_updates - warmup), and the time's share since
    warm-up, (seconds - warmup_seconds) / (max_time - warmup_seconds). So the decay ends
    when the run does, whichever budget stops it (Li, Yumer & Ramanan, 2020: budgeted
    training decays over the budget, not over a guessed number of updates)."""
    shares = [0.0]
    if max_updates:
        shares.append((step - warmup) / max(1, max_updates - warmup))
    if max_time:
        shares.append((seconds - warmup_seconds) / max(1e-9, max_time - warmup_seconds))
    return min(1.0, max(shares))


def warmup_fraction(
    *,
    step: int,
    warmup: int,
    seconds: float = 0.0,
    max_time: float = 0.0,
    warmup_share: float = 0.0,
) -> float:
    """How much of warm-up is done, 0..1: step / --warmup, or with a time budget and a
    --warmup-share the larger of that and seconds / (share x max_time). The share keeps a
    slow machine, which makes fewer updates in the same time, from spending most of its
    budget warming up."""
    shares = [step / warmup if warmup else 1.0]
    if warmup_share and max_time:
        shares.append(seconds / (warmup_share * max_time))
    return min(1.0, max(shares))


def lr_at(
    step: int,
    *,
    schedule: str,
    lr: float,
    warmup: int,
    max_updates: int = 0,
    min_lr: float = 0.0,
    seconds: float = 0.0,
    max_time: float = 0.0,
    warmup_seconds: float = 0.0,
    warmup_share: float = 0.0,
    warmup_ended: int | None = None,
) -> float:
    """The learning rate of update `step` (1-based): linear warm-up to `lr`, then the schedule.

    inverse_sqrt: lr * sqrt(warmup / step) after warm-up (fairseq's inverse_sqrt, the
    Vaswani et al. schedule with `lr` as its peak); cosine: half a cosine from `lr`
    down to `min_lr` (Loshchilov & Hutter, 2017); linear: a straight line from `lr` to
    `min_lr`; constant: `lr`. cosine and linear end at the end of the budget,
    `decay_progress`: `max_updates` or `max_time` seconds of training (`seconds` spent so
    far), whichever comes first. Their warm-up ends after `warmup` updates or
    `warmup_share` of `max_time`, whichever comes first (`warmup_fraction`); the decay
    starts where it ended: update `warmup_ended`, `warmup_seconds` into the budget (the
    loop records both; 0 while warming up; None: at `warmup` updates). Other schedules
    warm up over updates only.
    """
    step = max(step, 1)
    if schedule in DECAYING:
        if warmup_ended is None:
            warmup_ended = warmup if step > warmup else 0
        if not warmup_ended:
            return lr * warmup_fraction(
                step=step, warmup=warmup, seconds=seconds, max_time=max_time,
                warmup_share=warmup_share,
            )  # fmt: skip
        done = decay_progress(
            step=step,
            warmup=warmup_ended,
            max_updates=max_updates,
            seconds=seconds,
            max_time=max_time,
            warmup_seconds=warmup_seconds,
        )
        left = 0.5 * (1.0 + math.cos(math.pi * done)) if schedule == "cosine" else 1.0 - done
        return min_lr + (lr - min_lr) * left
    if warmup and step <= warmup:
        return lr * step / warmup
    if schedule == "inverse_sqrt":
        return lr * math.sqrt(max(warmup, 1) / step)
    return lr


def set_lr(optimizer, value: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = value
