"""Ranking policies of the simulator: a policy gets a batch of requests and returns candidate indices.

The contract is :class:`FPolicy` (F stage) and :class:`EPolicy` (E stage): ``rank(request, k)`` returns a
``LongTensor[R, k]`` of distinct indices into ``request.candidates``, in display order. Policies see
predictions, never the truth: the usual policy is a :class:`ValuePolicy` that composes

* a predictor (:class:`FPredictor`): per-candidate predicted probabilities (``{"cvr", "vtr", "sdr"}`` tensors
  ``[R, n]``) from a trained model, or :class:`TruthPredictor` (truth plus persistent logit noise);
* an ensemble: any ``Callable[[Mapping[str, Tensor]], Tensor]`` (an :class:`stcrank.plugins.Ensemble`, or
  :class:`WeightedSum`) turning the predictions into a value ``[R, n]``;
* optionally a re-ranker: any ``Callable[[value, continue_prob, k], LongTensor[R, k]]`` (an
  :class:`stcrank.plugins.Reranker`); without one, the top ``k`` by value (point-wise greedy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor

from stcrank.simulation import rng
from stcrank.simulation.requests import ERequest, FRequest
from stcrank.simulation.truth import vtr

SdrLabel = Literal["all", "filtered", "no_purchase"]

_TASK_KEYS = {"cvr": 1, "vtr": 2, "sdr": 3, "ctr": 11, "swipe": 12, "f_conv": 13}
_NOISE_DOMAIN = 0x51A7
_GUMBEL_DOMAIN = 0x6A3B
_RANDOM_DOMAIN = 0x7C4D


class FPredictor(ABC):
    """Predicts per-candidate probabilities of F-stage requests."""

    @abstractmethod
    def predict(self, request: FRequest) -> dict[str, Tensor]:
        """Predict.

        Args:
            request: The batch of requests.

        Returns:
            Task name -> probability tensor ``[R, n]`` (e.g. ``"cvr"``, ``"vtr"``, ``"sdr"``).
        """


class EPredictor(ABC):
    """Predicts per-candidate probabilities of homepage requests."""

    @abstractmethod
    def predict(self, request: ERequest) -> dict[str, Tensor]:
        """Predict.

        Args:
            request: The batch of requests.

        Returns:
            Task name -> probability tensor ``[R, n]`` (e.g. ``"ctr"``, ``"cvr"``, ``"swipe"``, ``"f_conv"``).
        """


class FPolicy(ABC):
    """An F-stage ranking policy."""

    @abstractmethod
    def rank(self, request: FRequest, k: int) -> Tensor:
        """Choose and order ``k`` candidates per request.

        Args:
            request: The batch of ``R`` requests with ``n >= k`` candidates each.
            k: Items to return.

        Returns:
            ``LongTensor[R, k]`` of distinct indices into ``request.candidates``, in display order.
        """


class EPolicy(ABC):
    """A homepage (E-stage) ranking policy."""

    @abstractmethod
    def rank(self, request: ERequest, k: int) -> Tensor:
        """Choose and order ``k`` candidates per request.

        Args:
            request: The batch of ``R`` requests.
            k: Items to show on the homepage.

        Returns:
            ``LongTensor[R, k]`` of distinct indices into ``request.candidates``, in display order.
        """


def _noise(seed: int, users: Tensor, items: Tensor, n_items: int, task: str) -> Tensor:
    """Standard normal noise fixed per (seed, user, item, task)."""
    return torch.special.ndtri(rng.pair_uniform(seed, (_NOISE_DOMAIN, _TASK_KEYS[task], users), items, n_items))


def _add_noise(p: Tensor, noise: float, eps: Tensor) -> Tensor:
    return torch.sigmoid(torch.logit(p.clamp(1e-6, 1 - 1e-6)) + noise * eps)


class TruthPredictor(FPredictor):
    """The true F-stage probabilities plus persistent noise: a model with known error.

    The noise is added on the logit scale and is a fixed function of (seed, user, item, task), so the same
    pair is mispredicted the same way in every request, as a trained model would.

    Args:
        noise: Standard deviation of the logit noise (0 gives the truth).
        vtr_threshold: Threshold ``tau`` (seconds) of the ``"vtr"`` prediction ``P(T > tau)``.
        sdr_label: What the ``"sdr"`` prediction estimates: ``"all"`` the eq. 5 label (exits after purchases
            count as negatives, so buyable items look like exits), ``"filtered"`` the eq. 6 label
            (exit-after-purchase samples weigh 0), ``"no_purchase"`` the continuation ``1 - e0``.
        seed: Seed of the noise.
    """

    def __init__(
        self, *, noise: float = 0.0, vtr_threshold: float = 5.0, sdr_label: SdrLabel = "filtered", seed: int = 0
    ) -> None:
        if sdr_label not in ("all", "filtered", "no_purchase"):
            raise ValueError(f"sdr_label must be 'all', 'filtered' or 'no_purchase', got {sdr_label!r}")
        if vtr_threshold <= 0 or noise < 0:
            raise ValueError(f"need vtr_threshold > 0 and noise >= 0; got {vtr_threshold}, {noise}")
        self.noise = noise
        self.vtr_threshold = vtr_threshold
        self.sdr_label = sdr_label
        self.seed = seed

    def predict(self, request: FRequest) -> dict[str, Tensor]:
        """Return ``{"cvr", "vtr", "sdr"}`` of the candidates at the request's history, with noise."""
        truth = request.truth()
        sdr = {"all": truth.sdr, "filtered": truth.sdr_filtered, "no_purchase": truth.continue_no_purchase}
        exact = {"cvr": truth.cvr, "vtr": self._vtr(request), "sdr": sdr[self.sdr_label]}
        if self.noise <= 0:
            return exact
        n_items = request.world.n_items
        out = {}
        for task, p in exact.items():
            # The noise depends on (user, item) only: drawn once per candidate pool, gathered per request.
            eps = request.pooled(
                ("truth_predictor_noise", self.seed, task),
                lambda pool, task=task: _noise(self.seed, pool.users[:, None], pool.items, n_items, task),
            )
            out[task] = _add_noise(p, self.noise, eps)
        return out

    def _vtr(self, request: FRequest) -> Tensor:
        thresholds = [t for t, _ in request.world.behaviour.purchase_time_multipliers]
        if self.vtr_threshold in thresholds:
            return request.watch_survival()[thresholds.index(self.vtr_threshold)]
        return request.pooled(("vtr", self.vtr_threshold), lambda pool: vtr(pool.terms, self.vtr_threshold))


class ETruthPredictor(EPredictor):
    """The true homepage probabilities plus persistent logit noise.

    Args:
        noise: Standard deviation of the logit noise.
        f_conversion: Optional ``P(at least one F purchase | the user enters F through an item)``, as a table
            ``[U, C]`` by (user, trigger category) or ``[C]`` by category (see
            :func:`stcrank.simulation.explore.f_conversion_table`); adds the ``"f_conv"`` prediction.
        seed: Seed of the noise.
    """

    def __init__(self, *, noise: float = 0.0, f_conversion: Tensor | None = None, seed: int = 0) -> None:
        if f_conversion is not None and f_conversion.dim() not in (1, 2):
            raise ValueError(f"f_conversion must be [C] or [U, C]; got shape {tuple(f_conversion.shape)}")
        self.noise = noise
        self.f_conversion = f_conversion
        self.seed = seed

    def predict(self, request: ERequest) -> dict[str, Tensor]:
        """Return ``{"ctr", "cvr" (detail page | click), "swipe" (into F | click)}`` and ``"f_conv"``."""
        truth = request.truth()
        exact = {"ctr": truth.ctr, "cvr": truth.detail_cvr, "swipe": truth.swipe}
        if self.f_conversion is not None:
            category = request.world.item_category[request.candidates]
            if self.f_conversion.dim() == 1:
                exact["f_conv"] = self.f_conversion[category]
            else:
                exact["f_conv"] = self.f_conversion[request.user[:, None], category]
        if self.noise <= 0:
            return exact
        users, items, n_items = request.user[:, None], request.candidates, request.world.n_items
        return {
            task: _add_noise(p, self.noise, _noise(self.seed, users, items, n_items, task)) for task, p in exact.items()
        }


class WeightedSum:
    """Linear ensemble ``v = sum_t w_t * p_t`` (eq. 2); any callable on the predictions works in its place.

    Args:
        weights: Task name -> weight.
    """

    def __init__(self, weights: Mapping[str, float]) -> None:
        if not weights:
            raise ValueError("WeightedSum needs at least one weight")
        self.weights = dict(weights)

    def __call__(self, predictions: Mapping[str, Tensor]) -> Tensor:
        """Combine predictions into the value."""
        missing = [t for t in self.weights if t not in predictions]
        if missing:
            raise KeyError(f"WeightedSum needs predictions {list(self.weights)}; missing {missing}")
        return sum(w * predictions[t] for t, w in self.weights.items())


def _gumbel(seed: int, key: Tensor, candidates: Tensor, n_items: int) -> Tensor:
    """Gumbel noise fixed per (seed, session or visit key, item)."""
    return -torch.log(-torch.log(rng.pair_uniform(seed, (_GUMBEL_DOMAIN, key[:, None]), candidates, n_items)))


def _check_temperature(temperature: float) -> None:
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")


def _value_top(value: Tensor, k: int, temperature: float, gumbel: Callable[[], Tensor]) -> Tensor:
    """The top ``k`` by value; with ``temperature > 0`` a Plackett-Luce sample, the top of ``value / t + Gumbel``.

    Args:
        value: Candidate values ``[R, n]``.
        k: List length.
        temperature: Plackett-Luce temperature in value units (0 is greedy).
        gumbel: Draws the Gumbel noise ``[R, n]`` (called only when sampling).
    """
    if temperature > 0:
        return torch.topk(value / temperature + gumbel(), k, dim=1).indices
    return torch.topk(value, k, dim=1).indices


def _random_top(seed: int, rows: tuple[Tensor | int, ...], request: FRequest | ERequest, k: int) -> Tensor:
    """``k`` candidates drawn uniformly at random, fixed per (seed, ``rows``, item)."""
    keys = rng.pair_uniform(seed, rows, request.candidates, request.world.n_items)
    return torch.topk(keys, k, dim=1).indices


class ValuePolicy(FPolicy):
    """Predictions, then an ensemble, then a re-ranker (or the top ``k`` by value).

    Args:
        predictor: Gives per-candidate probabilities.
        ensemble: Maps the predictions to a value ``[R, n]`` (an :class:`stcrank.plugins.Ensemble` or any
            callable).
        reranker: Optional ``(value, continue_prob, k) -> LongTensor[R, k]`` (an
            :class:`stcrank.plugins.Reranker`); None ranks point-wise by value.
        continue_task: Prediction passed to the re-ranker as the continuation probability.
        temperature: If > 0, the list is a Plackett-Luce sample: the top ``k`` of
            ``value / temperature + Gumbel`` (exploration for logging; the re-ranker is then not used).
        seed: Seed of the exploration noise.
    """

    def __init__(
        self,
        predictor: FPredictor,
        ensemble: Callable[[Mapping[str, Tensor]], Tensor],
        reranker: Callable[[Tensor, Tensor, int], Tensor] | None = None,
        *,
        continue_task: str = "sdr",
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        _check_temperature(temperature)
        self.predictor = predictor
        self.ensemble = ensemble
        self.reranker = reranker
        self.continue_task = continue_task
        self.temperature = temperature
        self.seed = seed

    def rank(self, request: FRequest, k: int) -> Tensor:
        """Rank by the ensemble value of the predictions."""
        predictions = self.predictor.predict(request)
        value = self.ensemble(predictions)
        if self.temperature > 0 or self.reranker is None:
            n_items = request.world.n_items
            return _value_top(
                value,
                k,
                self.temperature,
                lambda: request.pooled(
                    ("plackett_luce", self.seed), lambda pool: _gumbel(self.seed, pool.keys, pool.items, n_items)
                ),
            )
        if self.continue_task not in predictions:
            raise KeyError(f"re-ranking needs the {self.continue_task!r} prediction; got {sorted(predictions)}")
        return self.reranker(value, predictions[self.continue_task], k)


class RandomPolicy(FPolicy):
    """A uniformly random list, fixed per (seed, session, request).

    Args:
        seed: Seed of the draws.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, request: FRequest, k: int) -> Tensor:
        """Return ``k`` random candidates."""
        return _random_top(self.seed, (_RANDOM_DOMAIN, request.request_index, request.session_key[:, None]), request, k)


class EValuePolicy(EPolicy):
    """Homepage ranking by an ensemble of predictions (Plackett-Luce sampled if ``temperature > 0``).

    Args:
        predictor: Gives per-candidate probabilities.
        ensemble: Maps the predictions to a value ``[R, n]``.
        temperature: If > 0, the top ``k`` of ``value / temperature + Gumbel``.
        seed: Seed of the exploration noise.
    """

    def __init__(
        self,
        predictor: EPredictor,
        ensemble: Callable[[Mapping[str, Tensor]], Tensor],
        *,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        _check_temperature(temperature)
        self.predictor = predictor
        self.ensemble = ensemble
        self.temperature = temperature
        self.seed = seed

    def rank(self, request: ERequest, k: int) -> Tensor:
        """Rank by the ensemble value of the predictions."""
        value = self.ensemble(self.predictor.predict(request))
        return _value_top(
            value,
            k,
            self.temperature,
            lambda: _gumbel(self.seed, request.visit_key, request.candidates, request.world.n_items),
        )


class ERandomPolicy(EPolicy):
    """A uniformly random homepage, fixed per (seed, visit).

    Args:
        seed: Seed of the draws.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, request: ERequest, k: int) -> Tensor:
        """Return ``k`` random candidates."""
        return _random_top(self.seed, (_RANDOM_DOMAIN, request.visit_key[:, None]), request, k)


def focus_logging_policy(seed: int = 0, *, noise: float = 0.8, temperature: float = 0.01) -> ValuePolicy:
    """The default F-stage logging policy: noisy truth, a reasonable ensemble, Plackett-Luce exploration.

    ``v = cvr + 0.05 * vtr(5 s) + 0.02 * sdr`` on predictions with logit noise ``noise``; the list is drawn by
    Plackett-Luce with ``temperature`` (in value units), so logs have position and selection signal and
    also explore.

    Args:
        seed: Seed of the prediction noise and the exploration.
        noise: Logit noise of the predictions.
        temperature: Plackett-Luce temperature (0 serves the greedy top ``k``).

    Returns:
        The policy.
    """
    predictor = TruthPredictor(noise=noise, vtr_threshold=5.0, sdr_label="filtered", seed=seed)
    ensemble = WeightedSum({"cvr": 1.0, "vtr": 0.05, "sdr": 0.02})
    return ValuePolicy(predictor, ensemble, temperature=temperature, seed=seed + 1)


def explore_logging_policy(seed: int = 0, *, noise: float = 0.8, temperature: float = 0.02) -> EValuePolicy:
    """The default homepage logging policy: noisy click-through rate, Plackett-Luce exploration (eq. 8).

    Args:
        seed: Seed of the prediction noise and the exploration.
        noise: Logit noise of the predictions.
        temperature: Plackett-Luce temperature in click-probability units.

    Returns:
        The policy.
    """
    predictor = ETruthPredictor(noise=noise, seed=seed)
    return EValuePolicy(predictor, WeightedSum({"ctr": 1.0}), temperature=temperature, seed=seed + 1)
