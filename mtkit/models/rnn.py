"""The attention RNN encoder-decoder (Luong et al., 2015), with the mtkit model interface.

Owns the bidirectional LSTM/GRU encoder, the bridge from its final states to the
decoder, and the decoder with attention (Luong "general" or Bahdanau additive)
and input feeding: the attentional vector of step t-1 is part of the input of
step t, so even teacher forcing walks the target one step at a time. Everything
that does not depend on the step (target embeddings, the attention keys of the
memory, the output projection) is computed once outside that loop.

The decoding state is a dict of batch-first tensors plus the int "step":
    memory [B,S,D], keys [B,S,D] (the memory under the attention's key projection),
    src_mask [B,1,1,S] bool (True = real token), h [B,L,D] (and c [B,L,D] for an
    LSTM), feed [B,D] (the last attentional vector).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mtkit.models.config import ModelConfig

# Luong et al. (2015), section 4.1: parameters uniform in [-0.1, 0.1].
INIT_RANGE = 0.1


class Attention(nn.Module):
    """Luong "general" (h^T W m) or Bahdanau additive (v^T tanh(W m + U h)) attention,
    followed by Luong's attentional vector tanh(W_c [context; h])."""

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.key = nn.Linear(d_model, d_model, bias=False)
        if kind == "bahdanau":
            self.query = nn.Linear(d_model, d_model, bias=False)
            self.score = nn.Linear(d_model, 1, bias=False)
        self.combine = nn.Linear(2 * d_model, d_model, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """[B,S,D] -> [B,S,D]: the step-independent part of the score, computed once."""
        return self.key(memory)

    def forward(self, h, memory, keys, mask) -> torch.Tensor:
        """h [B,D] attends over memory [B,S,D] -> the attentional vector [B,D]."""
        if self.kind == "luong":
            # One head, no 1/sqrt(D) scaling: exactly softmax(h^T W m) m, in one fused call.
            context = F.scaled_dot_product_attention(
                h[:, None, None], keys[:, None], memory[:, None], attn_mask=mask, scale=1.0
            )[:, 0, 0]
        else:
            energy = self.score(torch.tanh(keys + self.query(h)[:, None]))  # [B,S,1]
            energy = energy.squeeze(2).masked_fill(~mask[:, 0, 0], float("-inf"))
            weights = torch.softmax(energy, dim=1)  # [B,S]
            context = torch.bmm(weights[:, None], memory)[:, 0]
        return torch.tanh(self.combine(torch.cat([context, h], dim=1)))


class RNNModel(nn.Module):
    """Bi-RNN encoder, attention RNN decoder with input feeding (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        D, Ld = config.d_model, config.dec_layers
        self.pad_id, self.share = config.pad_id, config.share_embeddings
        self.is_lstm = config.rnn_cell == "lstm"
        Cell = nn.LSTM if self.is_lstm else nn.GRU
        # The target embedding is also the output projection (Press & Wolf, 2017):
        # the attentional vector has the embedding's size D.
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, D, padding_idx=config.pad_id)
        if not self.share:
            self.src_embed = nn.Embedding(config.src_vocab_size, D, padding_idx=config.pad_id)
        between = config.dropout if config.enc_layers > 1 else 0.0
        self.encoder = Cell(
            D, D // 2, config.enc_layers, batch_first=True, bidirectional=True, dropout=between
        )
        # The top encoder layer's final [forward; backward] state starts every decoder layer.
        self.bridge_h = nn.Linear(2 * (D // 2), Ld * D)
        if self.is_lstm:
            self.bridge_c = nn.Linear(2 * (D // 2), Ld * D)
        # A stack of cells, not nn.LSTM: one step at a time, the cells run faster on
        # the CPU (no per-call oneDNN set-up) and keep their state batch-first.
        DecoderCell = nn.LSTMCell if self.is_lstm else nn.GRUCell
        self.decoder = nn.ModuleList(DecoderCell(2 * D if i == 0 else D, D) for i in range(Ld))
        self.attention = Attention(D, config.attention)
        # Memory of an odd D: the encoder gives 2 * (D // 2) features, padded up to D.
        self.memory_size = 2 * (D // 2)
        self.drop = nn.Dropout(config.dropout)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -INIT_RANGE, INIT_RANGE)
        with torch.no_grad():
            self.tgt_embed.weight[config.pad_id] = 0
            if not self.share:
                self.src_embed.weight[config.pad_id] = 0

    # -- the interface -------------------------------------------------------------

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src [B,S], tgt_in [B,T] -> logits [B,T,V]."""
        state = self.encode(src)
        memory, keys, mask = state["memory"], state["keys"], state["src_mask"]
        hidden, feed = self._hidden(state), state["feed"]
        embedded = self.drop(self.tgt_embed(tgt_in))  # [B,T,D], all steps at once
        outputs = []
        for t in range(tgt_in.size(1)):
            feed, hidden = self._step(embedded[:, t], feed, hidden, memory, keys, mask)
            outputs.append(feed)
        # One output projection for all steps.
        return F.linear(torch.stack(outputs, dim=1), self.tgt_embed.weight)

    def encode(self, src: torch.Tensor) -> dict:
        """src [B,S] -> the decoding state before the first target step."""
        memory, final = self._encode(src)
        B = src.size(0)
        # [B, L*D] -> [B,L,D]: the bridge's initial state for each decoder layer
        state = {"h": torch.tanh(self.bridge_h(final)).view(B, self.config.dec_layers, -1)}
        if self.is_lstm:
            state["c"] = self.bridge_c(final).view(B, self.config.dec_layers, -1)
        state.update(
            memory=memory,
            keys=self.attention.keys(memory),
            src_mask=(src != self.pad_id)[:, None, None, :],
            feed=memory.new_zeros(B, self.config.d_model),
            step=0,
        )
        return state

    def decode_step(
        self, tokens: torch.Tensor, state: dict, output=None
    ) -> tuple[torch.Tensor, dict]:
        """tokens [B] -> logits [B,V] of the next position, and the new state; with
        `output` (from `output_projection`), logits [B,V'] of a shortlist's ids."""
        embedded = self.drop(self.tgt_embed(tokens))
        feed, hidden = self._step(
            embedded,
            state["feed"],
            self._hidden(state),
            state["memory"],
            state["keys"],
            state["src_mask"],
        )
        state = dict(state, feed=feed, step=state["step"] + 1)
        if self.is_lstm:
            state["h"] = torch.stack([h for h, _ in hidden], dim=1)
            state["c"] = torch.stack([c for _, c in hidden], dim=1)
        else:
            state["h"] = torch.stack(hidden, dim=1)
        if output is not None:
            return output(feed), state
        return F.linear(feed, self.tgt_embed.weight), state

    def output_projection(self, vocab: torch.Tensor):
        """h [B,D] -> logits [B,V'] over the target ids `vocab` [V'] (a lexical shortlist),
        the projection's rows sliced once for every step of a batch."""
        weight = self.tgt_embed.weight.index_select(0, vocab)
        return lambda h: F.linear(h, weight)

    def reorder_state(self, state: dict, index: torch.Tensor) -> dict:
        """Keep/reorder the batch rows `index` [B'] of every tensor in the state."""
        return {
            key: value.index_select(0, index) if torch.is_tensor(value) else value
            for key, value in state.items()
        }

    # -- helpers -------------------------------------------------------------------

    def _encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B,S] -> memory [B,S,D] (zeros at padding) and the top layer's final
        [forward; backward] state [B,D]. Packing keeps padding out of every state."""
        B, S = src.shape
        table = self.tgt_embed if self.share else self.src_embed
        embedded = self.drop(table(src))
        lengths = (src != self.pad_id).sum(1).clamp(min=1).cpu()
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(output, batch_first=True, total_length=S)
        h = final[0] if self.is_lstm else final  # [layers*2, B, D/2]
        top = h.view(-1, 2, B, h.size(2))[-1]  # [2,B,D/2]: forward, backward
        memory = self.drop(memory)
        if self.memory_size != self.config.d_model:
            memory = F.pad(memory, (0, self.config.d_model - self.memory_size))
        return memory, torch.cat([top[0], top[1]], dim=1)

    def _hidden(self, state: dict) -> list:
        """The decoder's state as one entry per layer: (h, c) [B,D] pairs, or h [B,D]."""
        if self.is_lstm:
            return list(zip(state["h"].unbind(1), state["c"].unbind(1), strict=True))
        return list(state["h"].unbind(1))

    def _step(self, embedded, feed, hidden, memory, keys, mask):
        """One decoder step: embedded [B,D] and the previous attentional vector feed [B,D]
        -> the new attentional vector [B,D] (after dropout) and the cells' new states."""
        x = torch.cat([embedded, feed], dim=1)  # [B,2D], input feeding
        new_hidden = []
        for i, cell in enumerate(self.decoder):
            if i > 0:
                x = self.drop(x)  # between layers, as nn.LSTM's dropout
            state = cell(x, hidden[i])
            new_hidden.append(state)
            x = state[0] if self.is_lstm else state
        attentional = self.attention(x, memory, keys, mask)
        return self.drop(attentional), new_hidden
