"""Language models by name: `build_language_model("lstm", vocab_size=10000, nhid=650, layers=2)`.

lstm is the classic embedding -> LSTM -> linear decoder of Zaremba et al. (2014) and PyTorch's
word_language_model example: uniform initialisation in ±0.1 of the embedding and decoder, optional
weight tying (Press & Wolf 2017; Inan et al. 2017), dropout on the embedding, between layers and on the output.
It reads contiguous streams and carries its hidden state (truncated backpropagation through time).

transformer is a decoder-only, GPT-2-style transformer (experiments/models/transformer.py): it reads
windows of at most `block_size` tokens and carries no state.
"""

from __future__ import annotations

import torch
from torch import nn

from experiments.models.transformer import TransformerLanguageModel
from experiments.options import UserError, check_options

INIT_RANGE = 0.1


class LSTMLanguageModel(nn.Module):
    """(tokens (time, batch), hidden) -> (logits (time, batch, vocab), hidden); hidden = (h, c), each
    (layers, batch, nhid)."""

    def __init__(self, vocab_size: int, emsize: int, nhid: int, layers: int, dropout: float,
                 dropout_embedding: float, tied: bool):
        super().__init__()
        self.layers, self.nhid = layers, nhid
        self.embedding_dropout = nn.Dropout(dropout_embedding)
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.lstm = nn.LSTM(emsize, nhid, layers, dropout=dropout if layers > 1 else 0.0)
        self.output_dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(nhid, vocab_size)
        nn.init.uniform_(self.encoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.uniform_(self.decoder.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.zeros_(self.decoder.bias)
        if tied:
            self.decoder.weight = self.encoder.weight  # one matrix: the input and output word embeddings

    def forward(self, tokens: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]):
        embedded = self.embedding_dropout(self.encoder(tokens))
        output, hidden = self.lstm(embedded, hidden)
        return self.decoder(self.output_dropout(output)), hidden

    def shard_units(self) -> list[nn.Module]:
        """FSDP's blocks: the LSTM (the embedding and the decoder may share one matrix: they stay in the root)."""
        return [self.lstm]

    def initial_hidden(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = self.decoder.bias  # its dtype and device (a plain tensor also when FSDP shards the weight)
        zeros = torch.zeros(self.layers, batch_size, self.nhid, dtype=weight.dtype, device=weight.device)
        return zeros, zeros.clone()


def build_language_model(name: str, vocab_size: int, **options) -> nn.Module:
    """The model called `name` (one of LANGUAGE_MODEL_NAMES) over a vocabulary of `vocab_size` words."""
    if name not in BUILDERS:
        raise UserError(f"Unknown model {name!r}. Valid names for language modelling: "
                         f"{', '.join(LANGUAGE_MODEL_NAMES)}.")
    builder = BUILDERS[name]
    check_options("Model", name, builder, options, given_apart=("name", "vocab_size"))
    return builder(name, vocab_size, **options)


def lstm(name: str, vocab_size: int, emsize: int = 650, nhid: int = 650, layers: int = 2, dropout: float = 0.5,
         dropout_embedding: float | None = None, tied: bool = False) -> LSTMLanguageModel:
    """`layers` (1-3) LSTM layers of `nhid` units over `emsize`-dimensional embeddings. `dropout` applies
    between layers and to the output, `dropout_embedding` (default: `dropout`) to the embeddings."""
    for key, value in (("emsize", emsize), ("nhid", nhid)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"model.{key}={value!r} must be a positive integer.")
    if layers not in (1, 2, 3):
        raise UserError(f"model.layers={layers!r} must be 1, 2 or 3.")
    dropout_embedding = dropout if dropout_embedding is None else dropout_embedding
    for key, value in (("dropout", dropout), ("dropout_embedding", dropout_embedding)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise UserError(f"model.{key}={value!r} must be in [0, 1) (0 = no dropout).")
    if tied and emsize != nhid:
        raise UserError(f"model.tied=true shares the embedding with the decoder, so model.emsize ({emsize}) must "
                         f"equal model.nhid ({nhid}); set both to the same value or model.tied=false.")
    return LSTMLanguageModel(vocab_size, emsize, nhid, layers, dropout, dropout_embedding, tied)


def transformer(name: str, vocab_size: int, n_layer: int = 12, n_head: int = 12, n_embd: int = 768,
                block_size: int = 1024, dropout: float = 0.0, bias: bool = True) -> TransformerLanguageModel:
    """`n_layer` pre-norm blocks of `n_head` heads over `n_embd` channels, windows of up to `block_size`
    tokens; the defaults are GPT-2 small (124M parameters with its 50,257 tokens)."""
    for key, value in (("n_layer", n_layer), ("n_head", n_head), ("n_embd", n_embd), ("block_size", block_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"model.{key}={value!r} must be a positive integer.")
    if n_embd % n_head:
        divisors = [h for h in range(1, min(n_embd, 64) + 1) if n_embd % h == 0]
        raise UserError(f"model.n_embd={n_embd} must be divisible by model.n_head={n_head} (each head takes "
                         f"n_embd / n_head channels); use n_head in {divisors[-6:]} or an n_embd that is a "
                         f"multiple of {n_head}, e.g. model.n_embd={-(-n_embd // n_head) * n_head}.")
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UserError(f"model.dropout={dropout!r} must be in [0, 1) (0 = no dropout).")
    return TransformerLanguageModel(vocab_size, n_layer, n_head, n_embd, block_size, float(dropout), bool(bias))


BUILDERS = {"lstm": lstm, "transformer": transformer}
LANGUAGE_MODEL_NAMES = tuple(BUILDERS)
