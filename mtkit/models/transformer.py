"""The Transformer encoder-decoder (Vaswani et al., 2017) with cached incremental decoding.

Owns the layers, the weight init and the decoding state; attention runs through
`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU and GPU).
Pre-norm by default (Xiong et al., 2020: trains without a long warm-up), post-norm
as in the paper when `config.pre_norm` is false.

The decoding state is a dict of tensors plus the ints "step" and "slots", for n
sentences decoded as N = n*r rows (r = 1, or the beam: the r rows of a sentence are
adjacent):
    src_bias  [n,1,1,S]       0 on real source tokens, -inf on padding
    cross_k/v [L,n,H,S,Dh]    each decoder layer's keys/values of the encoder memory
    self_k/v  [L,n,H,C,Dh]    the self-attention cache of each sentence: C slots, the
                              first "slots" filled; when full, the slots no row sees
                              any more are dropped and C doubles if need be
    self_bias [N,C]           0 on the slots a row attends to (its own and its
                              ancestors'), -inf on the others
Both caches belong to the sentence, not the row, so a beam move copies no keys or
values (copying the self-attention cache was a fifth of beam search's time at 25
steps, the memory's two fifths): each step appends the r new keys/values of a
sentence as r slots, and a row attends only to the slots of its own history, which
its `self_bias` row marks. A beam move reorders the [N,C] bias rows alone;
cross-attention runs the r rows of a sentence as r queries against its one memory,
and self-attention as r queries against its r*steps slots (r times the scores of a
row-per-row cache, which is cheaper than the copy). `reorder_beams` takes the rows
and, only when sentences leave, the sentences to keep; `reorder_state` takes any rows
(duplicates and permutations too) and so gives every row its own caches (r = 1).
Layer first, so a layer's caches are contiguous. A decoding step attends with batched
matmuls (`_attend`), not `scaled_dot_product_attention`, whose CPU kernel is 1.5-3x
slower on a step's shapes (one to a few queries per sentence).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtkit.errors import MtkitError
from mtkit.models.config import ModelConfig

# The self-attention cache starts with room for this many slots and doubles when
# full; when sentences leave, only the filled slots are kept, rounded up to a multiple.
CACHE_CHUNK = 16


def sinusoidal_positions(
    n_positions: int, d_model: int, layout: str = "interleaved", offset: int = 0
) -> torch.Tensor:
    """[n_positions, D]: row i is the sinusoid of position offset + i.

    "interleaved" (Vaswani et al., 2017, 3.5): sin on even and cos on odd dims;
    "halves": sines in the first half, cosines in the second (Marian's layout), same
    frequencies; "fairseq": halves with fairseq's frequencies exp(-j log(1e4) / (D/2 - 1))
    (fairseq's SinusoidalPositionalEmbedding, used by M2M-100, NLLB and transformers'
    M2M100 class, whose first token sits at position pad_id + 1: the caller's offset).
    """
    position = torch.arange(offset, offset + n_positions, dtype=torch.float32)[:, None]
    if layout == "fairseq":
        half = d_model // 2
        rate = torch.exp(torch.arange(half, dtype=torch.float32) * (-math.log(1e4) / (half - 1)))
        return torch.cat([torch.sin(position * rate), torch.cos(position * rate)], dim=1)
    rate = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(1e4) / d_model))
    if layout == "halves":
        return torch.cat([torch.sin(position * rate), torch.cos(position * rate)], dim=1)
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : d_model // 2]
    return table


def position_offset(config: ModelConfig) -> int:
    """The position of a sequence's first token: fairseq counts from pad_id + 1."""
    return config.pad_id + 1 if config.positions == "fairseq" else 0


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout

    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        B, T, _ = x.shape
        # [B,T,3D] -> 3 x [B,H,T,Dh], views without copies
        return self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, Dh = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * Dh))  # [B,T,D]

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        q, k, v = self._heads(x)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal
        )
        return self._merge(y)

    def step(self, x: torch.Tensor, cache_k, cache_v, slots: int, bias: torch.Tensor):
        """x [N,1,D], the N = n*r rows of n sentences: writes each sentence's r new keys and
        values at slots..slots+r of its caches [n,H,C,Dh], then attends over the filled
        slots under bias [n*H,r,slots+r] (which picks each row's own history)."""
        N, _, D = x.shape
        n, H, _, Dh = cache_k.shape
        r, end = N // n, slots + N // n
        q, k, v = self.qkv(x).view(n, r, 3, H, Dh).unbind(2)  # [n,r,H,Dh] each
        cache_k[:, :, slots:end] = k.transpose(1, 2)
        cache_v[:, :, slots:end] = v.transpose(1, 2)
        q = q.transpose(1, 2).reshape(n * H, r, Dh)
        keys = cache_k[:, :, :end].reshape(n * H, end, Dh)  # views: n and H merge
        values = cache_v[:, :, :end].reshape(n * H, end, Dh)
        y = _attend(q, keys, values, bias)  # [n*H,r,Dh]
        return self.out(y.view(n, H, r, Dh).transpose(1, 2).reshape(N, 1, D))


class CrossAttention(nn.Module):
    """Attention from the decoder to the encoder memory, with one fused k/v projection."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attn_dropout = attn_dropout

    def memory_kv(self, memory: torch.Tensor) -> torch.Tensor:
        """[B,S,D] -> [2,B,H,S,Dh]: keys and values of the memory (views)."""
        B, S, _ = memory.shape
        return self.kv(memory).view(B, S, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    def forward(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        B, T, D = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # [B,H,T,Dh]
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.out(y.transpose(1, 2).reshape(B, T, D))

    def step(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor):
        """x [N,1,D], N = n*r rows of n sentences, against k, v [n,H,S,Dh] and bias
        [n*H,r,S]: a sentence's r rows (its beams) are r queries on its memory."""
        N, _, D = x.shape
        n, H, S, Dh = k.shape
        r = N // n
        q = self.q(x).view(n, r, H, Dh).transpose(1, 2).reshape(n * H, r, Dh)
        y = _attend(q, k.reshape(n * H, S, Dh), v.reshape(n * H, S, Dh), bias)
        return self.out(y.view(n, H, r, Dh).transpose(1, 2).reshape(N, 1, D))


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor):
    """Scaled dot-product attention of q [b,r,Dh] on k, v [b,s,Dh] with an additive
    bias [b,r,s]: one decoding step's few queries per (sentence, head)."""
    scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=q.size(-1) ** -0.5)
    return torch.bmm(scores.softmax(-1), v)


# The feed-forward nonlinearity by its config name; swish is SiLU (Marian's default).
ACTIVATION_MODULES = {"relu": nn.ReLU, "swish": nn.SiLU, "gelu": nn.GELU}


class FeedForward(nn.Sequential):
    """Position-wise Linear-activation-Linear (ReLU unless the config says otherwise)."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu") -> None:
        act = ACTIVATION_MODULES[activation]()
        super().__init__(nn.Linear(d_model, d_ff), act, nn.Linear(d_ff, d_model))


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each a residual block, pre- or post-norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.d_model
        self.pre_norm = config.pre_norm
        self.attn = SelfAttention(D, config.n_heads, config.attn_dropout)
        self.ffn = FeedForward(D, config.d_ff, config.activation)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), mask))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, feed-forward; pre- or post-norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        D = config.d_model
        self.pre_norm = config.pre_norm
        self.self_attn = SelfAttention(D, config.n_heads, config.attn_dropout)
        self.cross_attn = CrossAttention(D, config.n_heads, config.attn_dropout)
        self.ffn = FeedForward(D, config.d_ff, config.activation)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(D), nn.LayerNorm(D), nn.LayerNorm(D)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, k, v, mask):
        """x [B,T,D]; k, v [B,H,S,Dh] of the memory. Right padding: causal masking alone
        keeps real positions off the pads."""
        if self.pre_norm:
            x = x + self.drop(self.self_attn(self.norm1(x), is_causal=True))
            x = x + self.drop(self.cross_attn(self.norm2(x), k, v, mask))
            return x + self.drop(self.ffn(self.norm3(x)))
        x = self.norm1(x + self.drop(self.self_attn(x, is_causal=True)))
        x = self.norm2(x + self.drop(self.cross_attn(x, k, v, mask)))
        return self.norm3(x + self.drop(self.ffn(x)))

    def step(self, x, k, v, cross_bias, cache_k, cache_v, slots: int, self_bias):
        """One position x [N,1,D]: the memory's k, v [n,H,S,Dh] per sentence under
        cross_bias (CrossAttention.step), this layer's self-attention caches [n,H,C,Dh]
        with `slots` filled under self_bias (SelfAttention.step)."""
        if self.pre_norm:
            x = x + self.drop(
                self.self_attn.step(self.norm1(x), cache_k, cache_v, slots, self_bias)
            )
            x = x + self.drop(self.cross_attn.step(self.norm2(x), k, v, cross_bias))
            return x + self.drop(self.ffn(self.norm3(x)))
        x = self.norm1(x + self.drop(self.self_attn.step(x, cache_k, cache_v, slots, self_bias)))
        x = self.norm2(x + self.drop(self.cross_attn.step(x, k, v, cross_bias)))
        return self.norm3(x + self.drop(self.ffn(x)))


class Transformer(nn.Module):
    """Encoder-decoder Transformer with the mtkit model interface (see mtkit.models)."""

    # Linear layers whose weights `encode` reads directly (one matmul for every layer's
    # memory keys/values): inference rewrites (mtkit.translate.kernels) leave them be.
    direct_linears = ("cross_attn.kv",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.pad_id, self.n_heads = config.pad_id, config.n_heads
        self.scale = math.sqrt(D) if config.scale_embeddings else 1.0
        self.share = config.share_embeddings
        # The target embedding is also the output projection (Press & Wolf, 2017).
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, D, padding_idx=config.pad_id)
        if not self.share:
            self.src_embed = nn.Embedding(config.src_vocab_size, D, padding_idx=config.pad_id)
        self.register_buffer(
            "positions",
            sinusoidal_positions(
                config.max_positions, D, config.positions, position_offset(config)
            ),
            persistent=False,
        )
        # Marian's fixed output bias [V] (a saved buffer, never trained); None: no bias.
        bias = torch.zeros(config.tgt_vocab_size) if config.final_logits_bias else None
        self.register_buffer("final_logits_bias", bias)
        # Decoding's output layer when quantized (see _step_logits); None: the embedding.
        self.step_output: nn.Module | None = None
        # How `output_projection` builds a shortlist's output layer from (weight, bias):
        # mtkit.translate.kernels sets the kind it gave step_output; None: F.linear.
        self.output_kind = None
        self.encoder = nn.ModuleList(EncoderLayer(config) for _ in range(config.enc_layers))
        self.decoder = nn.ModuleList(DecoderLayer(config) for _ in range(config.dec_layers))
        # Pre-norm leaves the residual stream unnormalised: one LayerNorm at each end.
        self.enc_norm = nn.LayerNorm(D) if config.pre_norm else nn.Identity()
        self.dec_norm = nn.LayerNorm(D) if config.pre_norm else nn.Identity()
        self.drop = nn.Dropout(config.dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform linears with zero bias; embeddings N(0, D^-0.5) as fairseq's
        transformer does, so embeddings scaled by sqrt(D) have unit variance."""
        D = self.config.d_model
        for module in self.modules():
            if isinstance(module, nn.Linear):
                # A fused projection is initialised as its separate D-row blocks would be.
                for block in module.weight.data.split(D, dim=0):
                    nn.init.xavier_uniform_(block)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=D**-0.5)
                nn.init.zeros_(module.weight.data[self.pad_id])

    # -- the interface -------------------------------------------------------------

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src [B,S], tgt_in [B,T] -> logits [B,T,V]."""
        memory, mask = self._encode(src)
        x = self._embed(self.tgt_embed, tgt_in, 0)
        for layer in self.decoder:
            k, v = layer.cross_attn.memory_kv(memory)
            x = layer(x, k, v, mask)
        return F.linear(self.dec_norm(x), self.tgt_embed.weight, self.final_logits_bias)

    def encode(self, src: torch.Tensor) -> dict:
        """The decoding state of src [B,S]: memory keys/values per layer, empty caches."""
        memory, mask = self._encode(src)
        B, S, D = memory.shape
        L, H = len(self.decoder), self.n_heads
        # One matmul for every layer's memory keys and values.
        weight = torch.cat([layer.cross_attn.kv.weight for layer in self.decoder])
        bias = torch.cat([layer.cross_attn.kv.bias for layer in self.decoder])
        kv = F.linear(memory, weight, bias).view(B, S, L, 2, H, D // H)
        kv = kv.permute(3, 2, 0, 4, 1, 5).contiguous()  # [2,L,B,H,S,Dh]
        # The caches take the projections' dtype: bf16 under autocast, not the memory's fp32.
        empty = kv.new_zeros(L, B, H, CACHE_CHUNK, D // H)
        return {
            "src_bias": kv.new_zeros(mask.shape).masked_fill_(~mask, -math.inf),
            "cross_k": kv[0],
            "cross_v": kv[1],
            "self_k": empty,
            "self_v": torch.zeros_like(empty),
            "self_bias": kv.new_full((B, CACHE_CHUNK), -math.inf),
            "slots": 0,
            "step": 0,
        }

    def decode_step(
        self, tokens: torch.Tensor, state: dict, output=None
    ) -> tuple[torch.Tensor, dict]:
        """tokens [N] at position state["step"] -> logits [N,V]; updates state in place.
        With `output` (from `output_projection`), logits [N,V'] of a shortlist's ids."""
        t, slots = state["step"], state["slots"]
        n, H = state["cross_k"].size(1), self.n_heads
        N = tokens.size(0)
        r = N // n
        if slots + r > state["self_k"].size(3):
            _make_room(state)
            slots = state["slots"]
        end = slots + r
        self_bias = state["self_bias"]
        # Row j of each sentence sees its own new slot, slots + j, and no other new one.
        own = self_bias.new_full((r, r), -math.inf).fill_diagonal_(0.0)
        self_bias.view(n, r, -1)[:, :, slots:end] = own
        self_bias = _per_head(self_bias[:, :end].view(n, 1, r, end), H)
        cross_bias = _per_head(state["src_bias"].expand(n, 1, r, -1), H)
        x = self._embed(self.tgt_embed, tokens[:, None], t)  # [N,1,D]
        self_k, self_v = state["self_k"], state["self_v"]
        cross_k, cross_v = state["cross_k"], state["cross_v"]
        for i, layer in enumerate(self.decoder):
            x = layer.step(
                x, cross_k[i], cross_v[i], cross_bias, self_k[i], self_v[i], slots, self_bias
            )
        state["step"], state["slots"] = t + 1, end
        h = self.dec_norm(x[:, 0])
        return (self._step_logits(h) if output is None else output(h)), state

    def output_projection(self, vocab: torch.Tensor):
        """h [N,D] -> logits [N,V'] over the target ids `vocab` [V'] alone (a lexical
        shortlist): the output projection's rows are sliced once, here, for every step
        of a batch, so each step's largest matmul shrinks from V to V' columns."""
        weight = self.tgt_embed.weight.index_select(0, vocab)
        bias = self.final_logits_bias
        bias = None if bias is None else bias.index_select(0, vocab)
        if self.output_kind is not None:
            return self.output_kind(weight, bias)
        return lambda h: F.linear(h, weight, bias)

    def reorder_state(self, state: dict, index: torch.Tensor) -> dict:
        """Keep/reorder the rows `index` [N'] (any rows, repeats allowed) of the state."""
        rows_per_sentence = state["self_bias"].size(0) // state["cross_k"].size(1)
        return self.reorder_beams(state, index, index // rows_per_sentence)

    def reorder_beams(
        self, state: dict, rows: torch.Tensor, sentences: torch.Tensor | None = None
    ) -> dict:
        """Keep/reorder rows [N'] (their self-attention bias rows alone); the sentences'
        caches only when `sentences` [n'] (which of the n sentences stay, in order) is given.

        The caller keeps each sentence's rows adjacent: the n' sentences (or the n
        ones) get N'/n' rows each, in that order, and a row moves only within its
        sentence; beam search's moves do.
        """
        state = dict(state)
        state["self_bias"] = state["self_bias"].index_select(0, rows)
        if sentences is None:
            return state
        # Copy the filled slots, not the spare room (at B=150 this halved a reorder's time).
        keep = -(-(state["slots"] + 1) // CACHE_CHUNK) * CACHE_CHUNK
        state["self_bias"] = state["self_bias"][:, :keep].contiguous()
        for key in ("self_k", "self_v"):
            state[key] = state[key][:, :, :, :keep].index_select(1, sentences)
        state["src_bias"] = state["src_bias"].index_select(0, sentences)
        for key in ("cross_k", "cross_v"):
            state[key] = state[key].index_select(1, sentences)
        return state

    def _step_logits(self, h: torch.Tensor) -> torch.Tensor:
        """h [N,D] -> logits [N,V]: the tied output projection, or its int8 copy
        `step_output` when mtkit.translate.stream quantized the model for decoding."""
        if self.step_output is not None:
            return self.step_output(h)
        return F.linear(h, self.tgt_embed.weight, self.final_logits_bias)

    # -- helpers -------------------------------------------------------------------

    def _encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B,S] -> memory [B,S,D] and its key mask [B,1,1,S] (True = real token)."""
        mask = (src != self.pad_id)[:, None, None, :]
        x = self._embed(self.tgt_embed if self.share else self.src_embed, src, 0)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.enc_norm(x), mask

    def _embed(self, table: nn.Embedding, ids: torch.Tensor, start: int) -> torch.Tensor:
        """ids [B,T] at positions start.. -> [B,T,D]: scaled embedding + sinusoid, dropout."""
        end = start + ids.size(1)
        if end > self.positions.size(0):
            raise MtkitError(
                f"a sequence of {end} tokens exceeds the model's max_positions "
                f"({self.positions.size(0)}); split or truncate longer lines"
            )
        return self.drop(table(ids) * self.scale + self.positions[start:end])


def _per_head(bias: torch.Tensor, n_heads: int) -> torch.Tensor:
    """An attention bias [n,1,r,s] repeated for each head: [n*H,r,s], as `_attend` takes it."""
    n, _, r, s = bias.shape
    return bias.expand(n, n_heads, r, s).reshape(n * n_heads, r, s)


def _make_room(state: dict) -> None:
    """Room for one more step (r slots a sentence, r = N/n) in full self-attention caches
    [L,n,H,C,Dh] (bias [N,C]).

    First the slots no row can see any more (those of dropped beams) leave: beams
    coalesce, so at step 24 of beam 5 a sentence's rows saw 45 of its 116 slots on
    average (87 at most, and a batch keeps its largest count). Attending over the dead
    ones made 60-piece outputs slower than CTranslate2. Then the capacity doubles if
    the live slots fill more than half of it.
    """
    slots, n = state["slots"], state["cross_k"].size(1)
    bias = state["self_bias"]
    N, capacity = bias.shape
    r = N // n
    live = (bias[:, :slots] == 0).view(n, r, slots).any(1)  # [n, slots]
    keep = int(live.sum(1).max())
    if 2 * (keep + r) > capacity:
        capacity = max(2 * capacity, keep + r)
    # Each sentence's live slots first, in order (a sentence with fewer keeps some
    # dead ones, which every one of its rows masks).
    order = torch.argsort((~live).to(torch.int16), dim=1, stable=True)[:, :keep]  # [n,keep]
    for key in ("self_k", "self_v"):
        old = state[key]
        L, _, H, _, Dh = old.shape
        index = order[None, :, None, :, None].expand(L, n, H, keep, Dh)
        new = old.new_zeros(L, n, H, capacity, Dh)
        new[:, :, :, :keep] = old.gather(3, index)
        state[key] = new
    kept = bias.view(n, r, -1).gather(2, order[:, None, :].expand(n, r, keep))
    state["self_bias"] = bias.new_full((N, capacity), -math.inf)
    state["self_bias"][:, :keep] = kept.reshape(N, keep)
    state["slots"] = keep
