"""Multi-gate mixture of experts (MMoE) over the features of e-shop F-stage page views (STCRank 3.1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stcrank.checks import NETWORK, check_not_empty, check_positive
from stcrank.models.mlp import mlp

DEFAULT_CATEGORICAL: tuple[str, ...] = (
    "user_id",
    "user_segment",
    "user_activity_bucket",
    "user_purchase_bucket",
    "user_price_bucket",
    "item_id",
    "item_category",
    "item_brand",
    "item_price_bucket",
    "trigger_item_id",
    "trigger_category",
    "trigger_brand",
    "trigger_price_bucket",
)
"""Categorical columns of the F log embedded by default (profile, target item, trigger item)."""

DEFAULT_COUNTS: dict[str, int] = {"request_index": 16, "hist_same_category_views": 16, "hist_ipv": 32}
"""Count columns embedded as buckets (value clamped to ``cap - 1``): request number and session history."""


class MMoE(nn.Module):
    """Shared embeddings, ``num_experts`` expert MLPs, one softmax gate and one tower per task.

    Features: an embedding per categorical column (ids start at 1, 0 is padding), an embedding per count
    column (clamped to its cap), ``log1p(item_price)``, and an interaction of the target item's category with
    the trigger's (same category or not) and with the session's same-category views, the signals that drive
    high-involvement purchases. Every feature is known when a request is ranked, so the network scores live
    simulator requests with the columns it was trained on.

    Args:
        feature_sizes: Embedding-table size (padding row included) of every categorical column.
        tasks: Task heads, e.g. ``["cvr", "vtr", "sdr"]``.
        embedding_dim: Width of every embedding.
        num_experts: Number of experts.
        expert_hidden: Widths of each expert MLP (its output is the last width).
        tower_hidden: Widths of each task tower before its output logit.
        categorical: Categorical columns to embed; :data:`DEFAULT_CATEGORICAL` when None (those absent from
            ``feature_sizes`` are skipped).
        counts: Count column -> bucket cap; :data:`DEFAULT_COUNTS` when None.
    """

    def __init__(
        self,
        feature_sizes: dict[str, int],
        tasks: list[str] | None = None,
        embedding_dim: int = 16,
        num_experts: int = 4,
        expert_hidden: list[int] | None = None,
        tower_hidden: list[int] | None = None,
        categorical: list[str] | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.tasks = list(tasks or ["cvr", "vtr", "sdr"])
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"MMoE needs distinct task names, got {self.tasks}")
        sizes = {"embedding_dim": embedding_dim, "num_experts": num_experts}
        check_positive("MMoE", NETWORK, **sizes, expert_hidden=expert_hidden, tower_hidden=tower_hidden)
        check_positive("MMoE", NETWORK, **{f"counts.{name}": cap for name, cap in (counts or {}).items()})
        check_not_empty("MMoE", NETWORK, tasks=tasks, expert_hidden=expert_hidden, tower_hidden=tower_hidden)
        expert_hidden = list(expert_hidden or [256, 128])
        tower_hidden = list(tower_hidden or [64])
        names = list(categorical) if categorical is not None else list(DEFAULT_CATEGORICAL)
        self.categorical = [name for name in names if name in feature_sizes]
        if categorical is not None and len(self.categorical) != len(names):
            missing = sorted(set(names) - set(self.categorical))
            raise ValueError(f"categorical features {missing} have no size in feature_sizes {sorted(feature_sizes)}")
        self.counts = dict(counts if counts is not None else DEFAULT_COUNTS)
        self.embeddings = nn.ModuleDict(
            {name: nn.Embedding(feature_sizes[name], embedding_dim, padding_idx=0) for name in self.categorical}
        )
        self.count_embeddings = nn.ModuleDict(
            {name: nn.Embedding(cap, embedding_dim) for name, cap in self.counts.items()}
        )
        # same-category flag x same-category views of the session (the involvement signal), 2 x 16 buckets
        self.involvement = nn.Embedding(32, embedding_dim)
        width = embedding_dim * (len(self.categorical) + len(self.counts) + 1) + 1
        self.input_norm = nn.LayerNorm(width)
        self.num_experts = num_experts
        self.experts = nn.ModuleList([mlp(width, expert_hidden) for _ in range(num_experts)])
        self.gates = nn.ModuleDict({task: nn.Linear(width, num_experts) for task in self.tasks})
        self.towers = nn.ModuleDict({task: mlp(expert_hidden[-1], tower_hidden, 1) for task in self.tasks})

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Every batch column the network reads."""
        extra = ("item_price", "item_category", "trigger_category", "hist_same_category_views")
        return tuple(dict.fromkeys([*self.categorical, *self.counts, *extra]))

    def _parts(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """Every input feature at its column's own shape, in input order (``[..., width]`` each)."""
        missing = [name for name in self.input_columns if name not in batch]
        if missing:
            raise KeyError(f"MMoE needs batch columns {list(self.input_columns)}; missing {missing}")
        columns = {name: _collapse_expanded(batch[name]) for name in self.input_columns}
        parts = [self.embeddings[name](columns[name].long()) for name in self.categorical]
        parts += [
            self.count_embeddings[name](columns[name].long().clamp(0, cap - 1)) for name, cap in self.counts.items()
        ]
        same = (columns["item_category"] == columns["trigger_category"]).long()
        views = columns["hist_same_category_views"].long().clamp(0, 15)
        parts.append(self.involvement(same * 16 + views))
        parts.append(torch.log1p(columns["item_price"].float().clamp(min=0)).unsqueeze(-1))
        return parts

    def _inputs(self, batch: dict[str, Tensor]) -> Tensor:
        """The normalised input vector of every row, ``[..., width]`` (every column broadcast to one shape)."""
        parts = self._parts(batch)
        shape = torch.broadcast_shapes(*(part.shape[:-1] for part in parts))
        return self.input_norm(torch.cat([part.expand(*shape, part.shape[-1]) for part in parts], dim=-1))

    def _first_layers(self) -> tuple[Tensor, Tensor]:
        """The first layer of every expert and every gate, stacked: weight ``[M, width]`` and bias ``[M]``."""
        layers = [expert[0] for expert in self.experts] + [self.gates[task] for task in self.tasks]
        return torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers])

    def _first_layer_outputs(self, parts: list[Tensor], groups: list[list[int]] | None = None) -> Tensor:
        """The stacked first layers on the normalised input, each column group computed at its own shape.

        Features that share a leading shape (e.g. the request-level ones at ``[R, 1]``, the candidates' at
        ``[R, n]``) form a group. The layer norm followed by a linear map ``W`` is
        ``(W diag(g) (x - mean) / std) + W b + c``; it splits over the groups through their shares of
        ``W diag(g) x`` and of the sums of ``x`` and ``x^2`` that give the mean and the variance, so a smaller
        group's share is computed once at its own shape and broadcast.

        The widest group (the candidates') is then normalised at its own width and meets everything else in one
        batched product: ``[x / std, 1 / std, -mean / std, 1]`` against ``[W diag(g); share; W diag(g) 1; W b +
        c]``, where ``share`` is the smaller groups' ``W diag(g) x`` of each request. The ``[..., M]`` output is
        written once, with no element-wise pass over it (on ``[R, n, 1036]`` those passes cost more than the
        products).

        Args:
            parts: :meth:`_parts` of a batch.
            groups: Indices of the parts of each group, the widest last; by leading shape when None (a traced
                graph, whose shapes are symbols, names them instead).
        """
        weight, bias = self._first_layers()
        norm = self.input_norm
        scaled = weight * norm.weight  # W diag(g)
        offset = weight @ norm.bias + bias  # W b + c
        if groups is None:
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for index, part in enumerate(parts):
                by_shape.setdefault(tuple(part.shape[:-1]), []).append(index)
            groups = sorted(by_shape.values(), key=lambda members: parts[members[0]].shape[:-1].numel())
        bounds = torch.tensor([0] + [part.shape[-1] for part in parts]).cumsum(0).tolist()

        def columns(members: list[int]) -> Tensor:
            return torch.cat([torch.arange(bounds[i], bounds[i + 1]) for i in members]).to(weight.device)

        *smaller, widest = groups
        x = torch.cat([parts[i] for i in widest], dim=-1)
        total, squares = x.sum(-1, keepdim=True), x.square().sum(-1, keepdim=True)
        share = None
        for members in smaller:
            x_small = torch.cat([parts[i] for i in members], dim=-1)
            part_share = F.linear(x_small, scaled.index_select(1, columns(members)))
            share = part_share if share is None else share + part_share
            total = total + x_small.sum(-1, keepdim=True)
            squares = squares + x_small.square().sum(-1, keepdim=True)
        width = bounds[-1]
        mean = total / width
        inverse_std = torch.rsqrt((squares / width - mean.square()).clamp(min=0) + norm.eps)
        if share is not None and share.dim() >= 2 and share.shape[-2] != 1:
            # The smaller groups vary along the last leading axis too: add their share at full shape.
            linear = F.linear(x, scaled.index_select(1, columns(widest))) + share
            return (linear - mean * scaled.sum(1)) * inverse_std + offset
        batch = share.shape[:-2] if share is not None else ()
        m = weight.shape[0]
        rows = [scaled.index_select(1, columns(widest)).t().expand(*batch, -1, m)]
        inputs = [x * inverse_std]
        if share is not None:
            rows.append(share)
            inputs.append(inverse_std)
        rows += [scaled.sum(1).expand(*batch, 1, m), offset.expand(*batch, 1, m)]
        inputs += [-mean * inverse_std, torch.ones_like(mean)]
        return torch.matmul(torch.cat(inputs, dim=-1), torch.cat(rows, dim=-2))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Score a batch.

        Columns may differ in shape as long as they broadcast: request-level columns (user, trigger, request
        number, session views) of shape ``[R, 1]`` with candidate columns ``[R, n]`` are embedded, and their
        share of the experts' and gates' first layers computed, once per request. A column expanded along an
        axis (stride 0, as ``Tensor.expand`` makes) is read once along it.

        Args:
            batch: Feature columns, each of shape ``[B]`` (or any leading shape ``[...]``, e.g. ``[R, n]``).

        Returns:
            Task name -> logit, of the columns' broadcast shape.
        """
        parts = self._parts(batch)
        if len({tuple(part.shape[:-1]) for part in parts}) == 1:
            # One shape: the plain layer norm, then the first layers.
            weight, bias = self._first_layers()
            first = F.linear(self.input_norm(torch.cat(parts, dim=-1)), weight, bias)
        else:
            first = self._first_layer_outputs(parts)
        return self.heads(first)

    @property
    def part_names(self) -> list[str]:
        """What each of :meth:`_parts`'s features is: a column name, ``involvement`` or ``item_price``."""
        return [*self.categorical, *self.counts, "involvement", "item_price"]

    def heads(self, first: Tensor) -> dict[str, Tensor]:
        """Task name -> logit from the stacked first layers' pre-activations (:meth:`_first_layer_outputs`)."""
        hidden = first.shape[-1] - len(self.tasks) * self.num_experts
        expert_first, gate_logits = first[..., :hidden], first[..., hidden:]
        # One ReLU over every expert's first layer (the first two modules of each expert), in place where
        # ``first`` is a fresh result, as the layers' own ReLUs are; not in a traced graph, where an in-place op
        # on a slice becomes a scatter into the whole output.
        fresh = first.grad_fn is not None or not first.requires_grad
        in_place = fresh and not torch.compiler.is_compiling()
        expert_first = expert_first.relu_() if in_place else expert_first.relu()
        experts = []
        for expert, x in zip(self.experts, expert_first.chunk(self.num_experts, dim=-1), strict=True):
            for layer in list(expert)[2:]:
                x = layer(x)
            experts.append(x)
        out = {}
        for task, logits in zip(self.tasks, gate_logits.chunk(len(self.tasks), dim=-1), strict=True):
            gate = torch.softmax(logits, dim=-1)  # [..., E]
            # The gate-weighted sum of the experts, accumulated expert by expert: no [..., E, H] stack.
            mixture = experts[0] * gate[..., :1]
            for index in range(1, self.num_experts):
                mixture = mixture.addcmul_(experts[index], gate[..., index : index + 1])
            out[task] = self.towers[task](mixture).squeeze(-1)
        return out


def _collapse_expanded(column: Tensor) -> Tensor:
    """``column`` with every expanded axis (stride 0, so one value along it) cut to size 1; unchanged if traced."""
    if torch.compiler.is_compiling():
        return column
    for axis in range(column.dim()):
        if column.stride(axis) == 0 and column.shape[axis] > 1:
            column = column.narrow(axis, 0, 1)
    return column
