"""How a loaded model's linear layers run when it translates.

Owns rewriting a model for inference, once, after loading: the modules put in are
not trainable and hold no state_dict entries (checkpoints are always written from
the float model), so only `mtkit.translate.stream.load_translator` calls this.
Every linear layer, and the Transformer's tied output projection, is replaced; the
first ReLU of each feed-forward block runs inside the matmul before it.

  - fp32 on the CPU: oneDNN with each weight reordered once into its blocked layout
    (PackedLinear). On the 2-core AVX-512 CPU that is 1.1-1.7x faster than F.linear
    (MKL) at decoding's shapes (5 to 1,280 rows, d 256, FFN 1,024, 8k vocabulary), and
    a beam step is mostly matmuls.
  - `--quantize int8` on the CPU: oneDNN's int8 matmul (Int8Linear): weights int8 per
    output channel, activations quantized per call to uint8 per tensor. At 320 rows and
    256-wide inputs it is 1.4-4x faster than torch.ao's dynamic quantization (fbgemm,
    there no faster than fp32 oneDNN; on the FFN's 1,024-wide input fbgemm is faster,
    0.27 against 0.38 ms), and closer to fp32 (per-channel weight scales). With
    mtkit.device's OpenMP waiting, beam 5 went from 110 to 136-148 sentences/s. Where
    oneDNN's int8 op is missing, torch.ao's dynamic quantization does it.
  - anything else (a GPU, bf16/fp16): unchanged.
Where an op is missing or disagrees with F.linear on a small check, the next choice
down is taken, so a torch without oneDNN still translates.
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import nn

# The rows oneDNN's weight layout is chosen for; measured from 5 to 1,280 rows, it
# changes the speed by under 10%, so one value serves decoding and encoding.
ROWS_HINT = 256


def prepare_for_decoding(model: nn.Module, *, device: str, dtype, quantize: str) -> nn.Module:
    """The model rewritten for translation on `device` in `dtype` (see the module doc)."""
    if quantize == "int8":
        if works(Int8Linear):
            replace_linears(model, Int8Linear)
            return model
        return quantize_int8(model)
    if device == "cpu" and dtype == torch.float32 and works(PackedLinear):
        replace_linears(model, PackedLinear)
    return model


class PackedLinear(nn.Module):
    """y = activation(x W^T + b) through oneDNN, W packed once into its blocked layout.

    The packed weight is an opaque tensor kept as a plain attribute: no parameter, no
    state_dict entry, no gradient."""

    TOLERANCE = 1e-4  # fp32, summed in another order

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)
        self.bias_values = None if bias is None else bias.detach()
        self.activation = "none"  # oneDNN's post-op: "none", or "relu" once fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.packed, self.bias_values, self.activation, [], ""
        )


class Int8Linear(nn.Module):
    """y = activation(x W^T + b) through oneDNN's int8 matmul: W symmetric int8 per output
    channel (packed once), x quantized at each call to uint8 with one scale and zero point
    (its own min and max), y in float32."""

    TOLERANCE = 0.05  # what 8 bits of weights and inputs cost

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        weight = weight.detach().float()
        self.scales = weight.abs().amax(1).clamp(min=1e-12) / 127.0
        quantized = (weight / self.scales[:, None]).round().clamp(-128, 127).to(torch.int8)
        self.packed = torch.ops.onednn.qlinear_prepack(quantized, None)
        self.zero_points = torch.zeros(weight.size(0), dtype=torch.long)
        self.bias_values = None if bias is None else bias.detach().float()
        self.activation = "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.size(-1))
        qx, scale, zero_point = _quantize_uint8(rows)
        y = torch.ops.onednn.qlinear_pointwise(
            qx, scale, zero_point, self.packed, self.scales, self.zero_points,
            self.bias_values, 1.0, 0, torch.float32, self.activation, [], "",
        )  # fmt: skip
        return y.view(*x.shape[:-1], y.size(-1))


def _quantize_uint8(x: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    """x as uint8 with the scale and zero point that map its range (and 0) onto 0..255.
    (torch's quantized tensors would do it in one call, but they are deprecated.)"""
    low, high = torch.aminmax(x)
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = max(high - low, 1e-12) / 255.0
    zero_point = int(round(-low / scale))
    # + 0.5, then truncation by the cast: rounding in one pass less than round_().
    shifted = x.mul(1.0 / scale).add_(zero_point + 0.5).clamp_(0.0, 255.0)
    return shifted.to(torch.uint8), scale, zero_point


def works(kind) -> bool:
    """Whether `kind` (PackedLinear, Int8Linear) runs with this torch on this CPU and
    agrees with F.linear within its TOLERANCE of the output's scale."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    weight, bias, x = (
        torch.randn(*shape, generator=generator) for shape in ((24, 16), (24,), (3, 1, 16))
    )
    try:
        with torch.inference_mode():
            y = kind(weight, bias)(x)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    expected = F.linear(x, weight, bias)
    return bool((y - expected).abs().max() <= kind.TOLERANCE * expected.abs().max())


def replace_linears(model: nn.Module, kind) -> None:
    """Every linear layer (but those the model reads directly) and the Transformer's output
    projection as `kind`(weight, bias), in place, with the feed-forward ReLUs fused."""
    direct, fused = _direct(model), _linear_relu_pairs(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in direct:
                setattr(module, child_name, kind(child.weight, child.bias))
    for name, i in fused:
        block = model.get_submodule(name)
        block[i].activation = "relu"
        block[i + 1] = nn.Identity()
    if hasattr(model, "step_output"):
        model.step_output = kind(model.tgt_embed.weight, model.final_logits_bias)
        model.output_kind = kind  # a shortlist's sliced projection runs the same way


def _direct(model: nn.Module) -> set[str]:
    """Names of linear layers whose weights the model reads directly (fused matmuls)."""
    suffixes = tuple(getattr(model, "direct_linears", ()))
    return {name for name, _ in model.named_modules() if suffixes and name.endswith(suffixes)}


# -- int8 without oneDNN: torch.ao dynamic quantization ----------------------------


def quantize_int8(model):
    """Dynamic int8 quantization of the linear layers (weights int8, activations per batch),
    and of the Transformer's tied output projection, a third of a decoding step's work."""
    direct = _direct(model)
    qconfig = torch.ao.quantization.default_dynamic_qconfig
    with warnings.catch_warnings():  # torch.ao says it will move to torchao; it works today
        warnings.simplefilter("ignore")
        # The feed-forward blocks' Linear+ReLU become one int8 op (quantized::linear_relu_dynamic).
        pairs = [[f"{name}.{i}", f"{name}.{i + 1}"] for name, i in _linear_relu_pairs(model)]
        if pairs:
            model = torch.ao.quantization.fuse_modules(model, pairs)
        linears = (nn.Linear, torch.ao.nn.intrinsic.LinearReLU)
        names = {
            name
            for name, module in model.named_modules()
            if isinstance(module, linears) and name not in direct
        }
        model = torch.ao.quantization.quantize_dynamic(
            model, {name: qconfig for name in names}, dtype=torch.qint8
        )
        if hasattr(model, "step_output"):
            model.output_kind = functools.partial(_int8_linear, qconfig=qconfig)
            model.step_output = model.output_kind(model.tgt_embed.weight, model.final_logits_bias)
    return model


def _linear_relu_pairs(model: nn.Module) -> list[tuple[str, int]]:
    """(Sequential's name, i) wherever its module i is a Linear and module i + 1 a ReLU."""
    return [
        (name, i)
        for name, block in model.named_modules()
        if isinstance(block, nn.Sequential)
        for i in range(len(block) - 1)
        if isinstance(block[i], nn.Linear) and isinstance(block[i + 1], nn.ReLU)
    ]


def _int8_linear(weight, bias, qconfig):
    """An int8 copy of an output projection (the target embedding, or a shortlist's rows of
    it, and its bias if any), used by decoding only: training and `forward` keep the float
    weights."""
    V, D = weight.shape
    linear = nn.Linear(D, V, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.qconfig = qconfig
    return torch.ao.nn.quantized.dynamic.Linear.from_float(linear)
