"""ESMM task: the multi-task ranking task trained on product heads, serving the factors (STCRank 3.4.1)."""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from stcrank.errors import ConfigError
from stcrank.tasks.multitask import MultiTaskRankingTask


class ESMMTask(MultiTaskRankingTask):
    """Train an :class:`~stcrank.models.esmm.ESMM` network on E-stage exposures through its product heads.

    Training, evaluation and the cached predictions are those of
    :class:`~stcrank.tasks.multitask.MultiTaskRankingTask`: the network's outputs are the exact logits of the
    product probabilities, so the masked BCE with logits of each head is the BCE of its product (label
    ``label_<product>``, e.g. ``y_click * y_swipe``) and the AUCs rank exposures by product probability.
    Serving (:meth:`predict_probabilities`) adds the conditional factors (``ctr``, ``sdr_star``,
    ``cvr_f_star``, ``cvr_detail``) to the products (``cvr_e``, ...), the inputs of the ``cross_stage``
    ensemble.

    ``predict`` writes every product and factor: a factor ``f`` that ends a product ``P`` whose other factors form
    a product ``Q`` gets ``P``'s label on the rows where ``Q``'s label is 1 (``sdr_star`` is the swipe among
    clicks: ``label_ctr_sdr`` where ``label_ctr``), so ``stcrank tune`` can weigh it; a factor no product
    isolates is written as ``score_<f>``.

    Args:
        network: The network, called with ``feature_sizes``; it must have ``tasks`` (the product heads) and
            ``probabilities(batch)`` (factors and products).
        loss_weights: ``lambda_t`` per product head (1 for a head not named).
        optimizer: The optimiser (default: Adam with ``lr``).
        lr: Learning rate of the default optimiser.
        feature_sizes: Embedding-table sizes by feature name; linked from the data module by the command line.
        predictions_path: Where ``predict`` writes the cached predictions (Parquet); nothing is written when None.
    """

    def __init__(
        self,
        network: Callable[[dict[str, int]], nn.Module],
        loss_weights: dict[str, float] | None = None,
        optimizer: OptimizerCallable | None = None,
        lr: float = 1e-3,
        feature_sizes: dict[str, int] | None = None,
        predictions_path: str | None = None,
    ) -> None:
        super().__init__(
            network,
            loss_weights=loss_weights,
            optimizer=optimizer,
            lr=lr,
            feature_sizes=feature_sizes,
            predictions_path=predictions_path,
        )
        if not callable(getattr(self.network, "probabilities", None)):
            raise ConfigError(
                f"--model.network {type(self.network).__name__} has no probabilities(batch): ESMMTask needs an "
                "ESMM network (stcrank.models.esmm.ESMM)"
            )

    def predict_probabilities(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Probability of every factor and every product head, of the batch columns' shape."""
        return self.network.probabilities(batch)

    def prediction_labels(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The products' labels, plus each factor's label where a product isolates it (see the class docstring)."""
        labels, masks = super().prediction_labels(batch)
        products: dict[str, list[str]] = getattr(self.network, "products", {})
        chains = {tuple(factors): name for name, factors in products.items()}
        for name, factors in products.items():
            factor, prefix = factors[-1], tuple(factors[:-1])
            if factor in labels or name not in labels or prefix not in chains or chains[prefix] not in labels:
                continue
            given = chains[prefix]
            labels[factor] = labels[name]
            masks[factor] = masks[name] & masks[given] & (labels[given] > 0.5)
        return labels, masks
