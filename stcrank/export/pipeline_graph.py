"""One graph for the whole F-stage ranking: candidate features -> multi-task network -> ensemble -> re-ranker.

This is :class:`~stcrank.simulation.policies.ValuePolicy` with a model predictor as a graph: the network's served
probabilities (:mod:`stcrank.export.multitask_graphs`), the tuned ensemble's value of every candidate (the
plugin's own ``combine``), and the re-ranker's list (:mod:`stcrank.export.rerank_graphs`) with one of the
predictions as the continuation probability. Its inputs are the multi-task graph's; it returns the ordered list
``order [requests, k]`` and the candidates' ``value [requests, candidates]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from stcrank.export.multitask_graphs import MultiTaskGraph, multitask_dims, multitask_inputs, output_names
from stcrank.export.rerank_graphs import MAX_CANDIDATES, reranker_graph
from stcrank.export.schema import DimSpec, GraphSpec, TensorSpec


class PipelineGraph(nn.Module):
    """Network, ensemble and re-ranker in one module.

    Args:
        network: The multi-task network (:class:`~stcrank.models.mmoe.MMoE` or :class:`~stcrank.models.esmm.ESMM`).
        ensemble: An :class:`~stcrank.plugins.Ensemble` (its ``combine`` is traced) or any callable on the
            predictions.
        reranker: The re-ranker graph (``value, continue_prob -> order``).
        continue_task: The prediction used as the continuation probability.
    """

    def __init__(self, network: nn.Module, ensemble: Any, reranker: nn.Module, continue_task: str) -> None:
        super().__init__()
        self.scorer = MultiTaskGraph(network)
        self.combine = getattr(ensemble, "combine", ensemble)
        self.reranker = reranker
        self.continue_task = continue_task

    def forward(
        self, request_features: Tensor, candidate_features: Tensor, item_price: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``(order [R, k], value [R, n])``."""
        shape = item_price.shape
        predictions = self.scorer.probabilities(self.scorer.columns(request_features, candidate_features, item_price))
        predictions = {name: p.expand(shape) for name, p in predictions.items()}
        value = self.combine(predictions).expand(shape).to(torch.float32)
        return self.reranker(value, predictions[self.continue_task]), value


def pipeline_graph(
    network: nn.Module,
    feature_sizes: dict[str, int],
    ensemble: Any,
    reranker: Any,
    k: int,
    continue_task: str = "sdr",
    ensemble_spec: Any = None,
) -> tuple[GraphSpec, nn.Module]:
    """The ``pipeline`` graph and its schema.

    Args:
        network: The trained multi-task network.
        feature_sizes: Its embedding-table sizes.
        ensemble: The ensemble (e.g. from ``stcrank tune``'s ``ensemble.yaml``).
        reranker: A ``greedy``, ``exact`` or ``beam_search`` re-ranker.
        k: List length.
        continue_task: Prediction used as the continuation probability (``sdr`` in STCRank).
        ensemble_spec: What to record of the ensemble in the metadata (its config).

    Raises:
        ExportError: If the network does not predict ``continue_task`` or a task of the ensemble, or the
            re-ranker cannot be exported.
    """
    from stcrank.export.formats import ExportError

    names = output_names(network)
    if continue_task not in names:
        raise ExportError(f"--continue_task {continue_task}: the network predicts {', '.join(names)}; choose one")
    missing = [task for task in getattr(ensemble, "tasks", ()) if task not in names]
    if missing:
        raise ExportError(
            f"--ensemble: it weighs {missing}, which the network does not predict ({', '.join(names)}); tune it on "
            "this model's predictions"
        )
    rerank_spec, rerank_module = reranker_graph(reranker, k)
    dims = multitask_dims()
    low = rerank_spec.dims["candidates"].min
    dims["candidates"] = DimSpec(
        "candidates", min=low, max=MAX_CANDIDATES, example=max(low + 3, 7), description="candidates per request"
    )
    spec = GraphSpec(
        name="pipeline",
        kind="pipeline",
        inputs=multitask_inputs(network, feature_sizes),
        outputs=[
            TensorSpec("order", "int64", ("requests", k), "candidate indices to show, in display order"),
            TensorSpec("value", "float32", ("requests", "candidates"), "ensemble value of each candidate"),
        ],
        dims=dims,
        metadata={
            "network": type(network).__name__,
            "feature_sizes": {name: int(size) for name, size in feature_sizes.items()},
            "predictions": names,
            "ensemble": ensemble_spec,
            "continue_task": continue_task,
            **rerank_spec.metadata,
        },
        description="Ranking pipeline: network probabilities, ensemble value, re-ranked list of k candidates.",
    )
    return spec, PipelineGraph(network, ensemble, rerank_module, continue_task)
