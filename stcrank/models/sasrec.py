"""SASRec: RecFlow's retrieval model, a causal self-attention encoder of the behaviour sequence.

The user vector is the encoder's output at the last position (the most recent behaviour of a left-padded
sequence); an item's vector is its id embedding; the retrieval score is their dot product.

Compared with RecFlow's reference code, padding is masked from the sequence mask rather than from
``keys.sum(-1) == 0`` (which would also mask a real behaviour whose embedding plus position sums to zero), and a
user without any behaviour gets a defined vector instead of NaN from a fully masked softmax.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from stcrank.checks import NETWORK, check_non_negative, check_positive


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask and a key-padding mask; queries come from ``LN(x)``.

    Args:
        dim: Model width.
        num_heads: Number of heads (``dim`` must be divisible by it).
        dropout: Dropout on the attention weights.
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Attend from every position to itself and the earlier real positions.

        Args:
            queries: ``[B, L, d]``.
            keys: ``[B, L, d]`` (also the values).
            mask: Bool ``[B, L]``, ``True`` on real behaviours.

        Returns:
            ``[B, L, d]``; zero at positions with no real key at or before them.
        """
        batch, length, dim = queries.shape
        heads, width = self.num_heads, dim // self.num_heads

        def split(x: Tensor) -> Tensor:
            return x.view(batch, length, heads, width).transpose(1, 2)  # [B, h, L, w]

        q, k, v = split(self.query(queries)), split(self.key(keys)), split(self.value(keys))
        logits = q @ k.transpose(-1, -2) / math.sqrt(width)  # [B, h, L, L]
        causal = torch.ones(length, length, dtype=torch.bool, device=queries.device).tril()
        allowed = causal & mask[:, None, None, :]
        logits = logits.masked_fill(~allowed, float("-inf"))
        # A query with no allowed key (a padded prefix, an empty history) would be softmax(-inf...) = NaN.
        weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)
        out = self.dropout(weights) @ v
        return out.transpose(1, 2).reshape(batch, length, dim)


class SASRecBlock(nn.Module):
    """One SASRec block: ``a = MHA(LN1(x), x) + LN1(x)``, ``f = FFN(LN2(a)) + LN2(a)``, masked.

    Args:
        dim: Model width.
        num_heads: Attention heads.
        dropout: Dropout in the attention and the feed-forward layers.
    """

    def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim, eps=1e-8)
        self.attention = CausalSelfAttention(dim, num_heads, dropout)
        self.norm_ffn = nn.LayerNorm(dim, eps=1e-8)
        # Point-wise feed-forward (the reference's kernel-1 Conv1d layers are Linear layers).
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Apply the block to ``x`` ``[B, L, d]`` with the behaviour mask ``[B, L]``."""
        queries = self.norm_attention(x)
        attended = self.attention(queries, x, mask) + queries
        normed = self.norm_ffn(attended)
        out = self.dropout(self.ffn(normed)) + normed
        return out * mask.unsqueeze(-1)


class SASRec(nn.Module):
    """RecFlow's SASRec (spec: retrieval baseline): video-id embeddings, learned positions, causal attention.

    Behaviour sequences are left-padded (most recent last), so the user vector is the output at the last
    position. Only the video id is used, for the behaviours and for the items.

    Args:
        feature_sizes: Embedding-table sizes by feature name (linked from the data module); ``video_id`` is used.
        embedding_dim: Width of the id embeddings and of the model.
        max_len: Length of the behaviour sequences (size of the positional embedding).
        num_blocks: Number of self-attention blocks.
        num_heads: Attention heads per block.
        dropout: Dropout on the input, the attention weights and the feed-forward layers.
    """

    def __init__(
        self,
        feature_sizes: dict[str, int],
        embedding_dim: int = 8,
        max_len: int = 50,
        num_blocks: int = 1,
        num_heads: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if "video_id" not in feature_sizes:
            raise ValueError(f"SASRec needs feature_sizes['video_id']; got keys {sorted(feature_sizes)}")
        sizes = {"embedding_dim": embedding_dim, "max_len": max_len, "num_blocks": num_blocks, "num_heads": num_heads}
        check_positive("SASRec", NETWORK, **sizes)
        check_non_negative("SASRec", NETWORK, dropout=dropout)
        self.embedding_dim = embedding_dim
        self.max_len = max_len
        self.item_embedding = nn.Embedding(int(feature_sizes["video_id"]), embedding_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, embedding_dim)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(embedding_dim, num_heads, dropout) for _ in range(num_blocks))
        self.norm_out = nn.LayerNorm(embedding_dim, eps=1e-8)

    def encode(self, seq: Tensor, seq_mask: Tensor) -> Tensor:
        """Hidden state at every position (position ``t`` sees the behaviours ``<= t`` only).

        Args:
            seq: Video ids of the behaviours (shifted, 0 = padding), ``[B, L]`` with ``L <= max_len``.
            seq_mask: Bool ``[B, L]``, ``True`` on real behaviours.

        Returns:
            ``[B, L, d]``.
        """
        if seq.dim() != 2 or seq.shape != seq_mask.shape:
            raise ValueError(f"seq and seq_mask must both be [B, L]; got {tuple(seq.shape)}, {tuple(seq_mask.shape)}")
        length = seq.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        mask = seq_mask.bool()
        # Right-align positions so that the most recent behaviour always has the last position embedding.
        positions = torch.arange(self.max_len - length, self.max_len, device=seq.device)
        x = self.item_embedding(seq * mask) + self.position_embedding(positions)
        x = self.input_dropout(x) * mask.unsqueeze(-1)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm_out(x)

    def user_vector(self, seq: Tensor, seq_mask: Tensor) -> Tensor:
        """The user vector: the hidden state at the last (most recent) position, ``[B, d]``."""
        return self.encode(seq, seq_mask)[:, -1]

    def item_vectors(self, items: Tensor) -> Tensor:
        """Embeddings of (shifted) video ids, any shape ``[...]`` -> ``[..., d]``."""
        return self.item_embedding(items)

    def forward(self, seq: Tensor, seq_mask: Tensor, items: Tensor) -> Tensor:
        """Score items for each user.

        Args:
            seq: Behaviour video ids ``[B, L]``.
            seq_mask: Bool ``[B, L]``.
            items: Video ids to score, ``[B, N]``.

        Returns:
            Dot products ``[B, N]``.
        """
        user = self.user_vector(seq, seq_mask)
        return torch.einsum("bd,bnd->bn", user, self.item_vectors(items))
