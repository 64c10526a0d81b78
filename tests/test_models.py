"""Model properties that training and search rely on, on tiny models (milliseconds each):
cached decoding equals the full forward pass, padding changes nothing, beam
reordering of the state is exact, a model can learn, and configs are checked."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mtkit.errors import ConfigError, MtkitError
from mtkit.models import ModelConfig, build_model

PAD, BOS, EOS, V = 0, 2, 3, 50

TINY = ModelConfig(
    src_vocab_size=V,
    tgt_vocab_size=V,
    d_model=32,
    n_heads=4,
    d_ff=64,
    enc_layers=2,
    dec_layers=2,
    dropout=0.0,
    max_positions=128,
)
CONFIGS = {
    "transformer-prenorm": TINY,
    "transformer-postnorm": dataclasses.replace(TINY, pre_norm=False),
    "transformer-separate-vocabs": dataclasses.replace(
        TINY, share_embeddings=False, src_vocab_size=40, tgt_vocab_size=60
    ),
    # The settings imported Marian (OPUS-MT) models use, with mtkit's special ids.
    "transformer-marian-settings": dataclasses.replace(
        TINY,
        pre_norm=False,
        activation="swish",
        positions="halves",
        scale_embeddings=False,
        final_logits_bias=True,
    ),
    "rnn-lstm-luong": dataclasses.replace(TINY, arch="rnn"),
    "rnn-gru-bahdanau": dataclasses.replace(TINY, arch="rnn", rnn_cell="gru", attention="bahdanau"),
    "rnn-separate-vocabs": dataclasses.replace(
        TINY, arch="rnn", share_embeddings=False, src_vocab_size=40, tgt_vocab_size=60
    ),
}


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=list(CONFIGS), ids=list(CONFIGS))
def model(request):
    return build_model(CONFIGS[request.param]).eval()


def random_batch(config: ModelConfig, src_lens, tgt_lens):
    """Right-padded src [B,S] and tgt_in [B,T] (bos first) of the given lengths."""
    src = torch.full((len(src_lens), max(src_lens)), PAD)
    tgt = torch.full((len(tgt_lens), max(tgt_lens)), PAD)
    for i, (s, t) in enumerate(zip(src_lens, tgt_lens, strict=True)):
        src[i, :s] = torch.randint(4, config.src_vocab_size, (s,))
        tgt[i, :t] = torch.randint(4, config.tgt_vocab_size, (t,))
        tgt[i, 0] = BOS
    return src, tgt


def decode_teacher_forced(model, src, tgt_in, state=None):
    """Feed tgt_in [B,T] one token at a time through decode_step -> logits [B,T,V]."""
    state = model.encode(src) if state is None else state
    steps = []
    for t in range(tgt_in.size(1)):
        logits, state = model.decode_step(tgt_in[:, t], state)
        steps.append(logits)
    return torch.stack(steps, dim=1)


@torch.no_grad()
def test_incremental_decoding_equals_forward(model):
    src, tgt = random_batch(model.config, [7, 4, 9], [6, 8, 3])
    full = model(src, tgt)
    assert full.shape == (3, 8, model.config.tgt_vocab_size)
    torch.testing.assert_close(decode_teacher_forced(model, src, tgt), full, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_cache_grows_and_is_trimmed_by_reordering_at_every_step(monkeypatch):
    """A Transformer cache of 2 steps: it grows past its capacity, and a reorder at
    every step (as beam search does) trims its spare room without losing a step."""
    from mtkit.models import transformer

    monkeypatch.setattr(transformer, "CACHE_CHUNK", 2)
    model = build_model(TINY).eval()
    src, tgt = random_batch(TINY, [5, 3, 6], [11, 9, 11])
    torch.testing.assert_close(
        decode_teacher_forced(model, src, tgt), model(src, tgt), atol=1e-5, rtol=1e-4
    )
    state, rows, steps = model.encode(src), torch.arange(3), []
    for t in range(tgt.size(1)):
        logits, state = model.decode_step(tgt[rows, t], state)
        steps.append(logits)
        index = torch.randperm(3)
        state, rows = model.reorder_state(state, index), rows[index]
        steps = [step[index] for step in steps]
    expected = model(src[rows], tgt[rows])
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_padding_changes_nothing(model):
    """A sentence alone and batched with longer ones (more src and tgt padding) is the same."""
    src, tgt = random_batch(model.config, [5, 11, 8], [4, 7, 10])
    batched = model(src, tgt)[0, :4]
    alone = model(src[:1, :5], tgt[:1, :4])[0]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    state = model.encode(src)
    stepped = decode_teacher_forced(model, src, tgt, state)[0, :4]
    torch.testing.assert_close(stepped, alone, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_reorder_state_equals_decoding_the_reordered_batch(model):
    src, tgt = random_batch(model.config, [6, 9, 4, 7], [5, 5, 5, 5])
    state = model.encode(src)
    for t in range(2):
        _, state = model.decode_step(tgt[:, t], state)
    # A beam move: duplicate row 2, drop row 0, swap the rest.
    index = torch.tensor([2, 3, 2, 1])
    state = model.reorder_state(state, index)
    rest = decode_teacher_forced(model, src, tgt[index, 2:], state)
    expected = model(src[index], tgt[index])[:, 2:]
    torch.testing.assert_close(rest, expected, atol=1e-5, rtol=1e-4)


def test_shared_embeddings_are_one_parameter():
    for arch in ("transformer", "rnn"):
        model = build_model(dataclasses.replace(TINY, arch=arch))
        embeddings = [p for p in model.parameters() if p.shape == (V, TINY.d_model)]
        assert len(embeddings) == 1, arch
        separate = build_model(dataclasses.replace(TINY, arch=arch, share_embeddings=False))
        embeddings = [p for p in separate.parameters() if p.shape == (V, TINY.d_model)]
        assert len(embeddings) == 2, arch


def test_state_dict_round_trips_into_a_fresh_model(model):
    fresh = build_model(model.config).eval()
    fresh.load_state_dict(model.state_dict())
    src, tgt = random_batch(model.config, [5, 3], [4, 6])
    with torch.no_grad():
        torch.testing.assert_close(fresh(src, tgt), model(src, tgt))


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_tiny_model_learns_to_reverse_random_sequences(arch):
    """100 random sequences, reversed: the loss falls to near zero in ~100 updates."""
    config = dataclasses.replace(
        TINY, arch=arch, src_vocab_size=20, tgt_vocab_size=20, d_model=64, d_ff=128
    )
    model = build_model(dataclasses.replace(config, enc_layers=1, dec_layers=1))
    data = torch.randint(4, 20, (100, 6))
    tgt_in = torch.cat([torch.full((100, 1), BOS), data.flip(1)], dim=1)
    tgt_out = torch.cat([data.flip(1), torch.full((100, 1), EOS)], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2 if arch == "rnn" else 3e-3)
    for _ in range(300):
        logits = model(data, tgt_in)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt_out.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.05


def test_build_model_takes_a_checkpoint_dict():
    model = build_model(dataclasses.asdict(dataclasses.replace(TINY, d_model=48)))
    assert model.config.d_model == 48


@pytest.mark.parametrize(
    "values, message",
    [
        ({"arch": "lstm"}, "unknown arch 'lstm'; choose one of: transformer, rnn"),
        ({"d_model": 30}, "d_model (30) must be divisible by n_heads (4)"),
        ({"tgt_vocab_size": 60}, "share_embeddings needs one joint vocabulary"),
        ({"colour": "red"}, "unknown model settings 'colour'"),
    ],
)
def test_build_model_rejects_bad_configs(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_model({**dataclasses.asdict(TINY), **values})


def test_too_long_input_is_a_clear_error():
    model = build_model(TINY).eval()
    src = torch.randint(4, V, (1, TINY.max_positions + 1))
    with pytest.raises(MtkitError, match="exceeds the model's max_positions"):
        model.encode(src)


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_decoding_under_bf16_autocast_matches_forward(arch):
    """The GPU path (bf16 autocast), here on the CPU: caches take the autocast dtype,
    also when they grow, and cached decoding stays close to the full pass."""
    model = build_model(dataclasses.replace(TINY, arch=arch)).eval()
    src, tgt = random_batch(model.config, [7, 5], [70, 40])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        full = model(src, tgt)
        stepped = decode_teacher_forced(model, src, tgt)
    assert stepped.dtype == torch.bfloat16
    torch.testing.assert_close(stepped.float(), full.float(), atol=0.1, rtol=0.05)


# -- settings for imported models (issue 11) ---------------------------------------


def test_default_settings_rebuild_older_checkpoints_unchanged():
    """A config saved before these settings existed gets mtkit's old model: ReLU,
    interleaved sinusoids, sqrt(D) scaling, no output bias, the same parameter names."""
    old = dataclasses.asdict(TINY)
    for key in ("activation", "positions", "scale_embeddings", "final_logits_bias"):
        del old[key]
    model = build_model(old)
    assert isinstance(model.decoder[0].ffn[1], torch.nn.ReLU)
    assert model.scale == pytest.approx(32**0.5)
    assert "final_logits_bias" not in model.state_dict()
    rate = 1e4 ** (-2 / 32)  # the second frequency
    angle = torch.tensor(3 * rate)
    torch.testing.assert_close(model.positions[3, 2:4], torch.stack([angle.sin(), angle.cos()]))


def test_halves_layout_is_marians_sinusoid():
    """Hugging Face's MarianSinusoidalPositionalEmbedding: pos / 10000^(2*(j//2)/D), sin of
    the even j in the first half, cos of the odd j in the second, from position 0."""
    from mtkit.models.transformer import sinusoidal_positions

    n, d = 20, 16
    angle = torch.tensor(
        [[pos / 10000 ** (2 * (j // 2) / d) for j in range(d)] for pos in range(n)],
        dtype=torch.float64,
    )
    expected = torch.cat([angle[:, 0::2].sin(), angle[:, 1::2].cos()], 1).float()
    torch.testing.assert_close(sinusoidal_positions(n, d, "halves"), expected)
    interleaved = sinusoidal_positions(n, d)
    torch.testing.assert_close(interleaved[:, 0::2], expected[:, : d // 2])


@torch.no_grad()
def test_final_logits_bias_is_added_to_every_output_and_saved():
    config = dataclasses.replace(TINY, final_logits_bias=True)
    model = build_model(config).eval()
    src, tgt = random_batch(config, [5, 3], [4, 2])
    before = model(src, tgt)
    bias = torch.randn(V)
    model.final_logits_bias.copy_(bias)
    torch.testing.assert_close(model(src, tgt), before + bias)
    logits, _ = model.decode_step(tgt[:, 0], model.encode(src))
    torch.testing.assert_close(logits, before[:, 0] + bias, atol=1e-5, rtol=1e-4)
    assert torch.equal(model.state_dict()["final_logits_bias"], bias)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"activation": "tanh"}, "unknown activation 'tanh'; choose one of: relu, swish, gelu"),
        ({"positions": "learned"}, "unknown positions 'learned'"),
        ({"pad_id": V}, f"pad_id {V} is outside the target vocabulary"),
    ],
)
def test_build_model_rejects_bad_import_settings(values, message):
    with pytest.raises(ConfigError, match=message):
        build_model({**dataclasses.asdict(TINY), **values})


@pytest.mark.parametrize("activation", ["relu", "swish", "gelu"])
def test_activation_setting_picks_the_feed_forward_nonlinearity(activation):
    model = build_model(dataclasses.replace(TINY, activation=activation))
    expected = {"relu": torch.nn.ReLU, "swish": torch.nn.SiLU, "gelu": torch.nn.GELU}
    assert all(isinstance(layer.ffn[1], expected[activation]) for layer in model.encoder)
