"""Inference rewrites (mtkit.translate.kernels): the packed model computes what the float
model computes, and leaves what is saved and trained alone."""

from __future__ import annotations

import copy

import pytest
import torch
from test_models import CONFIGS as MODEL_CONFIGS

from mtkit.models import build_model
from mtkit.translate.kernels import Int8Linear, PackedLinear, prepare_for_decoding, works

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not works(PackedLinear), reason="torch has no oneDNN linear here"),
]

# The Transformer shapes of test_models: pre-norm shared ReLU, separate vocabularies,
# and Marian's settings (post-norm, swish, halves, output bias).
CONFIGS = {name: MODEL_CONFIGS[name] for name in MODEL_CONFIGS if name.startswith("transformer")}


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.inference_mode()
def test_packed_model_decodes_as_the_float_model(name):
    torch.manual_seed(0)
    model = build_model(CONFIGS[name]).eval()
    if model.final_logits_bias is not None:
        model.final_logits_bias.normal_()
    packed = prepare_for_decoding(
        copy.deepcopy(model), device="cpu", dtype=torch.float32, quantize="none"
    )
    assert any(isinstance(m, PackedLinear) for m in packed.modules())
    assert packed.state_dict().keys() <= model.state_dict().keys()
    src = torch.randint(4, model.config.src_vocab_size, (3, 7))
    tgt = torch.randint(4, model.config.tgt_vocab_size, (3, 5))
    torch.testing.assert_close(packed(src, tgt), model(src, tgt), atol=1e-4, rtol=1e-4)
    state, packed_state = model.encode(src), packed.encode(src)
    for t in range(tgt.size(1)):
        logits, state = model.decode_step(tgt[:, t], state)
        packed_logits, packed_state = packed.decode_step(tgt[:, t], packed_state)
        torch.testing.assert_close(packed_logits, logits, atol=1e-4, rtol=1e-4)


def test_gpu_and_half_precision_are_left_alone():
    model = build_model(CONFIGS["transformer-prenorm"]).eval()
    for device, dtype in (("cuda", torch.float32), ("cpu", torch.bfloat16)):
        prepared = prepare_for_decoding(model, device=device, dtype=dtype, quantize="none")
        assert not any(isinstance(m, PackedLinear) for m in prepared.modules())


def test_int8_translates_as_fp32_nearly_always(multi30k):
    """`--quantize int8` (feed-forward Linear+ReLU fused, output projection int8 too) stays
    close to fp32 on a trained model: its output scores BLEU >= 60 against fp32's (72.6
    measured; half the lines are identical, this tiny copying model being fragile) and
    copies the source about as well."""
    import gzip

    import sacrebleu
    from test_search import tiny_checkpoint

    from mtkit.search import SearchOptions
    from mtkit.translate.stream import RuntimeOptions, load_translator, translate_lines

    checkpoint = tiny_checkpoint("transformer", multi30k)
    with gzip.open(multi30k / "val.de.gz", "rt", encoding="utf-8") as file:
        lines = [next(file).strip() for _ in range(40)]
    out = {}
    for quantize in ("none", "int8"):
        translator = load_translator([checkpoint], RuntimeOptions(quantize=quantize))
        out[quantize] = [hyps[0][0] for hyps in translate_lines(translator, lines, SearchOptions())]
    int8_ffn = translator.models[0].decoder[0].ffn[0]
    if works(Int8Linear):  # oneDNN's int8 matmul runs on this CPU (not on every x86-64)
        assert isinstance(int8_ffn, Int8Linear) and int8_ffn.activation == "relu"
    else:
        assert isinstance(int8_ffn, torch.ao.nn.quantized.dynamic.Linear)
    assert sacrebleu.corpus_bleu(out["int8"], [out["none"]]).score >= 60
    copied = {q: sacrebleu.corpus_bleu(out[q], [lines]).score for q in out}
    assert abs(copied["int8"] - copied["none"]) < 1.5, copied


@torch.inference_mode()
def test_int8_without_onednn_falls_back_to_dynamic_quantization(monkeypatch):
    """Where oneDNN's int8 matmul is missing, torch.ao's dynamic quantization does int8."""
    from mtkit.translate import kernels

    monkeypatch.setattr(kernels, "works", lambda kind: kind is not Int8Linear)
    torch.manual_seed(0)
    model = build_model(CONFIGS["transformer-prenorm"]).eval()
    quantized = prepare_for_decoding(
        copy.deepcopy(model), device="cpu", dtype=torch.float32, quantize="int8"
    )
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(quantized.step_output, dynamic)
    assert not any(isinstance(m, (Int8Linear, PackedLinear)) for m in quantized.modules())
    V = model.config.tgt_vocab_size
    src, tgt = torch.randint(4, V, (3, 7)), torch.randint(4, V, (3, 5))
    expected = model(src, tgt)
    error = (quantized(src, tgt) - expected).abs().max()
    assert error < 0.05 * expected.abs().max()
