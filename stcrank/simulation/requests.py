"""What a ranking policy sees: a batch of F-stage or E-stage requests.

A request carries the observable state (user, trigger, candidates, the session's history so far) and can
render it as the model-feature columns of the log schema (:meth:`FRequest.columns`), so a model trained on
the logs scores live requests with the very columns it was trained on. :meth:`FRequest.truth` exists for
oracle predictors (truth plus noise) only; a policy built on a trained model never calls it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from stcrank.simulation.truth import (
    ExploreTruth,
    FocusTruth,
    PairTerms,
    exit_prob,
    explore_truth,
    purchase_prob,
    watch_survival,
)
from stcrank.simulation.world import World


@dataclass(eq=False)
class CandidatePool:
    """The retrieved candidates of a batch of F sessions, shared by all their requests.

    Retrieval is fixed per session, so anything that depends only on (session, candidate) (truth terms,
    a predictor's persistent noise, exploration noise) is computed once per pool and gathered per request
    (:meth:`FRequest.pooled`).

    Attributes:
        keys: Session keys, ``[B]``.
        users: User of each session, ``[B]``.
        items: Candidate items of each session, ``[B, n]``.
        terms: History-free truth terms of every (session, candidate), ``[B, n]`` each.
        cache: Tensors ``[B, n]`` computed once per pool, by key.
    """

    keys: Tensor
    users: Tensor
    items: Tensor
    terms: PairTerms
    cache: dict[Hashable, Tensor] = field(default_factory=dict)


@dataclass(eq=False)
class FRequest:
    """A batch of ``R`` F-stage requests, one per live session, all at the same request index.

    Attributes:
        world: The world (for feature lookup).
        session_key: Key of each session (common random numbers), ``[R]``.
        user: User index (0-based), ``[R]``.
        trigger: Trigger item index (0-based), ``[R]``.
        candidates: Candidate item indices not shown yet in the session, ``[R, n]``.
        request_index: Page number within the session (0 for the first request).
        depth: Items already shown in each session (``request_index * page_size``).
        same_category_views: Valid views of each category so far in the session, the trigger's detail page
            included, ``[R, C]``.
        ipv_so_far: Valid views so far in the F session, ``[R]``.
    """

    world: World
    session_key: Tensor
    user: Tensor
    trigger: Tensor
    candidates: Tensor
    request_index: int
    depth: int
    same_category_views: Tensor
    ipv_so_far: Tensor
    pool: CandidatePool
    """The candidate pools of the sessions (each request ranks the part of its pool not shown yet)."""
    pool_rows: Tensor
    """Row of each request in ``pool``, ``[R]``."""
    pool_positions: Tensor
    """Position of each candidate in its pool, ``[R, n]``."""

    def __len__(self) -> int:
        return self.candidates.shape[0]

    @property
    def candidate_category(self) -> Tensor:
        """Category (0-based) of each candidate, ``[R, n]``."""
        return self.world.item_category[self.candidates]

    def candidate_views(self) -> Tensor:
        """Valid views so far of each candidate's category in its session, ``[R, n]``."""
        return self.same_category_views.gather(1, self.candidate_category)

    def columns(self) -> dict[str, Tensor]:
        """Model-feature columns of every (request, candidate), named as in the F log schema.

        The position of a candidate in the list is not known before ranking; ``request_index`` and the
        session history are (``hist_same_category_views`` counts the candidate's category).

        Returns:
            Column name -> tensor of shape ``[R, n]`` (``int64``; ``item_price`` ``float32``).
        """
        shape = self.candidates.shape
        cols: dict[str, Tensor] = {}
        for name, value in self.world.user_features(self.user).items():
            cols[name] = value[:, None].expand(shape)
        for name, value in self.world.item_features(self.trigger, "trigger").items():
            cols[name] = value[:, None].expand(shape)
        cols.update(self.world.item_features(self.candidates, "item"))
        cols["item_price"] = self.world.item_price[self.candidates]
        cols["request_index"] = torch.full(shape, self.request_index, dtype=torch.int64)
        cols["hist_same_category_views"] = self.candidate_views()
        cols["hist_ipv"] = self.ipv_so_far[:, None].expand(shape)
        return cols

    @functools.cached_property
    def pool_index(self) -> Tensor:
        """Flat (row-major) index of each candidate in its pool's ``[B, n]`` tensors, ``[R, n]``."""
        return self.pool_rows[:, None] * self.pool.items.shape[1] + self.pool_positions

    def pooled(self, key: Hashable, compute: Callable[[CandidatePool], Tensor]) -> Tensor:
        """A per-(session, candidate) tensor, computed once per pool and gathered for these candidates.

        Args:
            key: Cache key (include everything ``compute`` depends on besides the pool, e.g. a seed).
            compute: Maps the pool to a ``[B, n]`` tensor.

        Returns:
            The values of this request's candidates, ``[R, n]``.
        """
        if key not in self.pool.cache:
            self.pool.cache[key] = compute(self.pool)
        return torch.take(self.pool.cache[key], self.pool_index)

    @functools.cached_property
    def terms(self) -> PairTerms:
        """History-free truth terms of the candidates, ``[R, n]`` each (for oracle predictors only)."""
        return self.pool.terms.take(self.pool_index)

    def watch_survival(self) -> list[Tensor]:
        """``P(T > t_k)`` of the candidates at each watch-bucket threshold, ``[R, n]`` each.

        See :func:`~stcrank.simulation.truth.watch_survival`; computed once per pool.
        """
        world = self.world
        count = len(world.behaviour.purchase_time_multipliers)
        return [
            self.pooled(("watch_survival", k), lambda p, k=k: watch_survival(world, p.terms)[k]) for k in range(count)
        ]

    def truth(self) -> FocusTruth:
        """True probabilities of the candidates at the request's history, were each shown next.

        For oracle predictors only.

        Returns:
            The closed-form truth, each ``[R, n]``.
        """
        terms, survival = self.terms, self.watch_survival()
        cvr = purchase_prob(self.world, terms, self.candidate_views(), survival)
        e0 = exit_prob(self.world, terms, self.depth)
        sdr = 1.0 - cvr * terms.e1 - (1.0 - cvr) * e0
        filtered = sdr / torch.clamp(sdr + (1.0 - cvr) * e0, min=1e-12)
        ipv = survival[0]
        return FocusTruth(ipv, cvr, cvr / torch.clamp(ipv, min=1e-12), e0, terms.e1, sdr, filtered)


@dataclass(eq=False)
class ERequest:
    """A batch of ``R`` homepage (E-stage) requests.

    Attributes:
        world: The world.
        visit_key: Key of each visit (common random numbers), ``[R]``.
        user: User index (0-based), ``[R]``.
        candidates: Candidate item indices, ``[R, n]``.
    """

    world: World
    visit_key: Tensor
    user: Tensor
    candidates: Tensor

    def __len__(self) -> int:
        return self.candidates.shape[0]

    def columns(self) -> dict[str, Tensor]:
        """Model-feature columns of every (request, candidate), named as in the E log schema.

        Returns:
            Column name -> tensor of shape ``[R, n]`` (``int64``; ``item_price`` ``float32``).
        """
        shape = self.candidates.shape
        cols = {name: value[:, None].expand(shape) for name, value in self.world.user_features(self.user).items()}
        cols.update(self.world.item_features(self.candidates, "item"))
        cols["item_price"] = self.world.item_price[self.candidates]
        return cols

    def truth(self) -> ExploreTruth:
        """True E-stage probabilities of the candidates (for oracle predictors only), each ``[R, n]``."""
        return explore_truth(self.world, self.user[:, None], self.candidates)
