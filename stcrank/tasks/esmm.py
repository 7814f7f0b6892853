"""ESMM task: the multi-task ranking task trained on product heads, serving the factors (STCRank 3.4.1)."""

from __future__ import annotations

from collections.abc import Callable

from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

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
            raise TypeError(f"ESMMTask needs a network with probabilities(batch); got {type(self.network).__name__}")

    def predict_probabilities(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Probability of every factor and every product head, of the batch columns' shape."""
        return self.network.probabilities(batch)
