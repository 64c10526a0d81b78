"""How a loaded model's linear layers run when it translates.

Owns rewriting a model for inference, once, after loading: the modules put in are
not trainable and hold no state_dict entries (checkpoints are always written from
the float model), so only `mtkit.translate.stream.load_translator` calls this.

  - fp32 on the CPU: every linear layer, and the Transformer's tied output
    projection, runs through oneDNN with its weight reordered once into oneDNN's
    blocked layout, the first ReLU of each feed-forward block fused in. On the 2-core
    AVX-512 CPU that is 1.1-1.7x faster than F.linear (MKL) at decoding's shapes
    (5 to 1,280 rows, d 256, FFN 1,024, 8k vocabulary): a beam step's matmuls are
    most of its time. Where torch's oneDNN op is missing or disagrees with F.linear,
    the model stays as it is.
  - `--quantize int8`: dynamic quantization (int8 weights, activations quantized
    per batch) of the linear layers and of the output projection.
  - anything else (a GPU, bf16/fp16): unchanged.
"""

from __future__ import annotations

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
        return quantize_int8(model)
    if device == "cpu" and dtype == torch.float32 and onednn_linear_works():
        pack_linears(model)
    return model


def _direct(model: nn.Module) -> set[str]:
    """Names of linear layers whose weights the model reads directly (fused matmuls)."""
    suffixes = tuple(getattr(model, "direct_linears", ()))
    return {name for name, _ in model.named_modules() if suffixes and name.endswith(suffixes)}


# -- fp32: oneDNN with packed weights ------------------------------------------------


class PackedLinear(nn.Module):
    """y = activation(x W^T + b) through oneDNN, W packed once into its blocked layout.

    The packed weight is an opaque tensor kept as a plain attribute: no parameter, no
    state_dict entry, no gradient."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), ROWS_HINT)
        self.bias_values = None if bias is None else bias.detach()
        self.activation = "none"  # oneDNN's post-op: "none", or "relu" once fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(
            x, self.packed, self.bias_values, self.activation, [], ""
        )


def onednn_linear_works() -> bool:
    """Whether torch's packed oneDNN linear runs here and agrees with F.linear."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    weight, bias, x = (
        torch.randn(*shape, generator=generator) for shape in ((24, 16), (24,), (3, 1, 16))
    )
    try:
        with torch.inference_mode():
            packed = PackedLinear(weight, bias)(x)
    except (RuntimeError, AttributeError, NotImplementedError):
        return False
    return bool(torch.allclose(packed, F.linear(x, weight, bias), atol=1e-4, rtol=1e-4))


def pack_linears(model: nn.Module) -> None:
    """Route the model's linear layers (and the Transformer's output projection) through
    PackedLinear, in place."""
    direct, fused = _direct(model), _linear_relu_pairs(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full not in direct:
                setattr(module, child_name, PackedLinear(child.weight, child.bias))
    for name, i in fused:  # the feed-forward blocks' ReLU runs inside oneDNN's matmul
        block = model.get_submodule(name)
        block[i].activation = "relu"
        block[i + 1] = nn.Identity()
    if hasattr(model, "step_output"):
        model.step_output = PackedLinear(model.tgt_embed.weight, model.final_logits_bias)


# -- int8: dynamic quantization ---------------------------------------------------------


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
            model.step_output = _int8_output(model, qconfig)
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


def _int8_output(model, qconfig):
    """An int8 copy of the output projection (the target embedding, and its bias if any),
    used by decoding only: training and `forward` keep the float weights."""
    V, D = model.tgt_embed.weight.shape
    bias = model.final_logits_bias
    linear = nn.Linear(D, V, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(model.tgt_embed.weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.qconfig = qconfig
    return torch.ao.nn.quantized.dynamic.Linear.from_float(linear)
