"""Tensor-only forward passes of the e-shop multi-task networks (MMoE, ESMM) and their input schemas.

The networks read named feature columns; the graphs take them as three flat tensors, request-level columns once
per request (the network shares their work across the request's candidates, as it does in the simulator):

* ``request_features`` int64 ``[requests, Q]``: the user's profile, the trigger item, the request number and the
  session's purchase count (the schema's ``columns`` give the order);
* ``candidate_features`` int64 ``[requests, candidates, C]``: the candidate item's features and the session's
  views of its category;
* ``item_price`` float32 ``[requests, candidates]``.

The output ``probabilities [requests, candidates, T]`` holds what the task serves (its ``predict_probabilities``):
the probability of each head for an MMoE; of each factor and each product for an ESMM (the metadata's
``outputs`` name the last axis).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from stcrank.export.schema import DimSpec, GraphSpec, TensorSpec
from stcrank.models.esmm import product_log_prob
from stcrank.models.mmoe import MMoE

CANDIDATE_COUNTS = ("hist_same_category_views",)
"""Columns that are not item features yet differ between the candidates of a request."""


def is_candidate_column(name: str) -> bool:
    """Whether a column differs between the candidates of a request (item features and their session counts)."""
    return name.startswith("item_") or name in CANDIDATE_COUNTS


def column_layout(network: nn.Module) -> tuple[list[str], list[str]]:
    """The request-level and the candidate-level integer columns of a network, in graph order."""
    names = [name for name in network.input_columns if name != "item_price"]
    return [n for n in names if not is_candidate_column(n)], [n for n in names if is_candidate_column(n)]


def grouped_logits(mmoe: MMoE, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """``mmoe(batch)`` with request columns ``[R, 1]`` and candidate columns ``[R, n]``.

    The request-level share of the first layers is computed once per request, the groups named rather than found
    by shape (a traced graph's shapes are symbols).
    """
    parts = mmoe._parts(batch)
    request = [i for i, name in enumerate(mmoe.part_names) if name in batch and not is_candidate_column(name)]
    candidate = [i for i in range(len(parts)) if i not in request]
    return mmoe.heads(mmoe._first_layer_outputs(parts, [group for group in (request, candidate) if group]))


class MultiTaskGraph(nn.Module):
    """The served probabilities of an MMoE or ESMM network from the flat column layout.

    Args:
        network: A trained :class:`~stcrank.models.mmoe.MMoE` or :class:`~stcrank.models.esmm.ESMM`.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.request_columns, self.candidate_columns = column_layout(network)

    def columns(self, request_features: Tensor, candidate_features: Tensor, item_price: Tensor) -> dict[str, Tensor]:
        """The network's batch: request columns ``[R, 1]``, candidate columns ``[R, n]``."""
        batch = {name: request_features[:, i : i + 1] for i, name in enumerate(self.request_columns)}
        batch.update({name: candidate_features[:, :, i] for i, name in enumerate(self.candidate_columns)})
        batch["item_price"] = item_price
        return batch

    def probabilities(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Output name -> probability ``[R, n]``, as the task serves them."""
        if not hasattr(self.network, "products"):
            return {task: torch.sigmoid(logit) for task, logit in grouped_logits(self.network, batch).items()}
        # ESMM.log_probabilities, with the backbone's groups named.
        esmm = self.network
        inputs = dict(batch)
        inputs["trigger_category"] = batch["user_segment"]
        inputs["hist_same_category_views"] = torch.zeros_like(batch["user_segment"])
        factor = grouped_logits(esmm.backbone, inputs)
        out = {name: F.logsigmoid(z) for name, z in factor.items()}
        for name, factors in esmm.products.items():
            out[name] = product_log_prob([factor[f] for f in factors])
        return {name: torch.exp(log_p) for name, log_p in out.items()}

    def forward(self, request_features: Tensor, candidate_features: Tensor, item_price: Tensor) -> Tensor:
        """Probabilities ``[R, n, T]``."""
        out = self.probabilities(self.columns(request_features, candidate_features, item_price))
        shape = item_price.shape
        return torch.stack([value.expand(shape) for value in out.values()], dim=-1)


def output_names(network: nn.Module) -> list[str]:
    """Names of the last axis of the graph's output: the heads, or the factors then the products of an ESMM."""
    if hasattr(network, "products"):
        return [*network.factors, *(name for name in network.products if name not in network.factors)]
    return list(network.tasks)


def multitask_inputs(network: nn.Module, feature_sizes: dict[str, int]) -> list[TensorSpec]:
    """The input tensors of a multi-task graph (see the module docs)."""
    request, candidate = column_layout(network)

    def sizes(names: list[str]) -> tuple[int | None, ...]:
        # Count columns are clamped by the network: any id is valid.
        return tuple(int(feature_sizes[n]) if n in feature_sizes else None for n in names)

    return [
        TensorSpec(
            "request_features",
            "int64",
            ("requests", len(request)),
            "request-level columns (user profile, trigger item, counts); ids start at 1, 0 is unknown",
            columns=tuple(request),
            id_sizes=sizes(request),
        ),
        TensorSpec(
            "candidate_features",
            "int64",
            ("requests", "candidates", len(candidate)),
            "columns of each candidate (item features, session views of its category)",
            columns=tuple(candidate),
            id_sizes=sizes(candidate),
        ),
        TensorSpec("item_price", "float32", ("requests", "candidates"), "price of each candidate", range=(None, None)),
    ]


def multitask_dims() -> dict[str, DimSpec]:
    """The named dimensions of a multi-task graph."""
    return {
        "requests": DimSpec("requests", example=3, description="requests (one row each)"),
        "candidates": DimSpec("candidates", example=7, description="candidates per request"),
    }


def multitask_graph(network: nn.Module, feature_sizes: dict[str, int]) -> tuple[GraphSpec, nn.Module]:
    """The graph of an MMoE (``mmoe``) or ESMM (``esmm``) network."""
    kind = "esmm" if hasattr(network, "products") else "mmoe"
    names = output_names(network)
    metadata = {
        "network": type(network).__name__,
        "feature_sizes": {name: int(size) for name, size in feature_sizes.items()},
        "outputs": names,
        "tasks": list(network.tasks),
    }
    if kind == "esmm":
        metadata["products"] = {name: list(factors) for name, factors in network.products.items()}
    spec = GraphSpec(
        name=kind,
        kind="network",
        inputs=multitask_inputs(network, feature_sizes),
        outputs=[
            TensorSpec(
                "probabilities",
                "float32",
                ("requests", "candidates", len(names)),
                f"probability of {', '.join(names)} (last axis, in this order)",
                columns=tuple(names),
            )
        ],
        dims=multitask_dims(),
        metadata=metadata,
        description=f"{type(network).__name__}: served probabilities of every candidate of each request.",
    )
    return spec, MultiTaskGraph(network)
