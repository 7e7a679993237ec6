"""A decoder-only transformer language model in torch alone, from a tiny one for tests to GPT-2 small (124M).

GPT-2's layout (Radford et al. 2019; as in nanoGPT): learned token and position embeddings, `n_layer`
pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> 4x MLP with GELU -> residual),
a final LayerNorm and an output layer tied to the token embedding. Attention is
F.scaled_dot_product_attention(is_causal=True) (flash or memory-efficient kernels on GPUs). Weights are
normal(0, 0.02), the residual projections scaled by 1/sqrt(2 n_layer) (GPT-2's initialisation).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

INIT_STD = 0.02


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, channels = x.shape
        q, k, v = (t.view(batch, time, self.n_head, channels // self.n_head).transpose(1, 2)
                   for t in self.qkv(x).split(channels, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.residual_dropout(self.proj(y.transpose(1, 2).reshape(batch, time, channels)))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)): one unit of fully_shard under trainer.strategy=fsdp."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.attention_norm = nn.LayerNorm(n_embd, bias=bias)
        self.attention = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.mlp_norm = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(),
                                 nn.Linear(4 * n_embd, n_embd, bias=bias), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TransformerLanguageModel(nn.Module):
    """tokens (batch, time <= block_size) -> logits (batch, time, vocab): each position sees itself and the past."""

    def __init__(self, vocab_size: int, n_layer: int, n_head: int, n_embd: int, block_size: int, dropout: float,
                 bias: bool):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, n_embd)
        self.position_embedding = nn.Embedding(block_size, n_embd)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.final_norm = nn.LayerNorm(n_embd, bias=bias)
        self.decoder = nn.Linear(n_embd, vocab_size, bias=False)
        self.decoder.weight = self.token_embedding.weight  # tied input and output embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("attention.proj.weight", "mlp.2.weight")):  # the projections into the residual
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embedding_dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.decoder(self.final_norm(x))

    def shard_units(self) -> list[nn.Module]:
        """FSDP's blocks: each transformer block (the tied embedding, the final norm stay in the root)."""
        return list(self.blocks)
