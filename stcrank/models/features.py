"""Embedding tables of RecFlow's categorical features.

Feature layout (see the data-format docs): every id is shifted by +1 in the batch, so 0 is padding in every
table. The context (request time) and the item's upload time share the ``wday``/``hour``/``minute`` tables, as
in the RecFlow reference models.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CONTEXT_FEATURES = ("wday", "hour", "minute")
USER_FEATURES = ("user_id", "device_id", "gender", "age", "province")
ITEM_FEATURES = (
    "video_id",
    "author_id",
    "category_level_two",
    "category_level_one",
    "upload_type",
    "wday",
    "hour",
    "minute",
)
SEQUENCE_FEATURES = ITEM_FEATURES[:5]
"""A behaviour is described by the item's first five features (no upload time)."""


class RecFlowEmbeddings(nn.Module):
    """One embedding table per categorical feature, looked up by feature group.

    Args:
        feature_sizes: Rows of each table (vocabulary size, padding row included), by feature name.
        embedding_dim: Width of every embedding.
    """

    def __init__(self, feature_sizes: dict[str, int], embedding_dim: int = 8) -> None:
        super().__init__()
        names = dict.fromkeys(CONTEXT_FEATURES + USER_FEATURES + ITEM_FEATURES)
        missing = [name for name in names if name not in feature_sizes]
        if missing:
            raise KeyError(f"feature_sizes lacks {missing}; it has {sorted(feature_sizes)}")
        self.embedding_dim = embedding_dim
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(int(feature_sizes[name]), embedding_dim, padding_idx=0) for name in names}
        )

    def _check_ids(self, ids: Tensor, names: tuple[str, ...]) -> None:
        # An id outside its table would fail deep inside torch (an IndexError on CPU, a device assert on GPU)
        # without naming the feature; one reduction per lookup names it instead.
        if ids.numel() == 0 or torch.compiler.is_compiling():
            return
        sizes = torch.tensor([self.tables[name].num_embeddings for name in names], device=ids.device)
        flat = ids[..., : len(names)].reshape(-1, len(names))
        low, high = torch.aminmax(flat, dim=0)  # one pass over the ids
        bad = (low < 0) | (high >= sizes)
        if bool(bad.any()):
            position = int(bad.nonzero()[0, 0])
            column = flat[:, position]
            raise ValueError(
                f"feature {names[position]!r}: ids in [{int(column.min())}, {int(column.max())}] but its embedding "
                f"table has {int(sizes[position])} rows (padding row 0 included); the model's feature_sizes must "
                "come from the same store as the data"
            )

    def _embed(self, ids: Tensor, names: tuple[str, ...]) -> Tensor:
        # ids [..., len(names)] -> [..., len(names), d]
        self._check_ids(ids, names)
        columns = [self.tables[name](ids[..., position]) for position, name in enumerate(names)]
        return torch.stack(columns, dim=-2)

    def context(self, ids: Tensor) -> Tensor:
        """Embed request-time features ``[..., 3]`` to ``[..., 3, d]``."""
        return self._embed(ids, CONTEXT_FEATURES)

    def user(self, ids: Tensor) -> Tensor:
        """Embed user features ``[..., 5]`` to ``[..., 5, d]``."""
        return self._embed(ids, USER_FEATURES)

    def item(self, ids: Tensor) -> Tensor:
        """Embed item features ``[..., 8]`` to ``[..., 8, d]``."""
        return self._embed(ids, ITEM_FEATURES)

    def behaviour(self, ids: Tensor) -> Tensor:
        """Embed behaviour (or any item's first five) features ``[..., 5]`` to ``[..., 5, d]``."""
        return self._embed(ids[..., : len(SEQUENCE_FEATURES)], SEQUENCE_FEATURES)
