"""Stage samples as extra negatives (entry point ``stage_extra``): RecFlow's data-distribution-shift experiments.

With ``scope="request"`` (the default), ``per_stage`` rows of each chosen stage are drawn uniformly **without
replacement** for every request (or every row when ``per_stage`` is None). With ``scope="global"``, as the
reference code's ``*_data_dist_shift_sampling`` does, ``n_requests x per_stage`` rows of each stage are drawn
uniformly without replacement from all the day's rows of that stage, so a request may get none or several. The
data module adds the drawn rows to the day's exposures with label 0 (RecFlow paper, sections 3.2.1 and 3.3.1,
Tables 4 and 6).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from stcrank.data.recflow.schema import STAGE_PRIORITY
from stcrank.plugins import NegativeSampler, SampledNegatives

__all__ = ["SCOPES", "StageExtraNegativeSampler"]

SCOPES: tuple[str, ...] = ("request", "global")
"""Where the rows of a stage are drawn from: each request's own rows, or all the day's rows."""


class StageExtraNegativeSampler(NegativeSampler):
    """Draw ``per_stage`` items of each chosen stage's pool, without replacement, one pool row per example.

    The output has ``per_stage`` columns per stage (in the order of ``stages``; ``mask`` is ``False`` where a
    request has fewer items), or, with ``per_stage=None``, each stage's whole pool. Items equal to the example's
    target are never drawn. The draw depends only on the pools and the generator's state.

    With ``scope="global"`` the data module calls :meth:`sample_global` once per day instead of :meth:`sample`.

    Args:
        stages: Stage pools to draw from (``"rank_neg"``, ``"coarse_neg"``...).
        per_stage: Items drawn per stage and example (per request); None takes every item of the pool.
        scope: ``request`` (draw within each request) or ``global`` (draw ``n_requests x per_stage`` rows of
            each stage from the whole day, the reference code's sampling).
    """

    def __init__(self, stages: list[str], per_stage: int | None = 1, scope: str = "request") -> None:
        if scope not in SCOPES:
            raise ValueError(f"StageExtraNegativeSampler: scope must be one of {list(SCOPES)}, got {scope!r}")
        self.scope = scope
        if not stages:
            raise ValueError("StageExtraNegativeSampler: stages must name at least one stage")
        unknown = [stage for stage in stages if stage not in STAGE_PRIORITY]
        if unknown:
            raise ValueError(
                f"StageExtraNegativeSampler: unknown stages {unknown}; the stages are {list(STAGE_PRIORITY)}"
            )
        if len(set(stages)) != len(stages):
            raise ValueError(f"StageExtraNegativeSampler: stages {stages} repeat a stage")
        if per_stage is not None and per_stage < 1:
            raise ValueError(f"StageExtraNegativeSampler: per_stage must be >= 1 or None, got {per_stage}")
        self.stages = list(stages)
        self.per_stage = per_stage

    def sample(self, pools: Mapping[str, Tensor], targets: Tensor, generator: torch.Generator) -> SampledNegatives:
        """Draw the negatives of a batch.

        Args:
            pools: ``[B, S]`` item ids with 0 as padding, for every stage of :attr:`stages`.
            targets: The positive item of each example, ``[B]`` (0 for none); never drawn.
            generator: The random generator (CPU).

        Returns:
            Items, priorities (the stage's cascade priority) and mask, each ``[B, N]``.

        Raises:
            KeyError: If a stage's pool is missing.
        """
        items, priority, mask = [], [], []
        for stage in self.stages:
            if stage not in pools:
                raise KeyError(f"StageExtraNegativeSampler: no pool for stage {stage!r}; pools: {sorted(pools)}")
            pool = pools[stage]
            valid = (pool != 0) & (pool != targets.reshape(-1, 1))
            if self.per_stage is None:
                drawn, kept = pool, valid
            else:
                # Uniform keys, padding last: the k smallest keys are a uniform draw without replacement.
                keys = torch.rand(pool.shape, generator=generator).to(pool.device).masked_fill(~valid, 2.0)
                width = min(self.per_stage, pool.shape[1])
                order = torch.argsort(keys, dim=1)[:, :width]
                drawn, kept = pool.gather(1, order), valid.gather(1, order)
                if width < self.per_stage:
                    pad = (0, self.per_stage - width)
                    drawn, kept = torch.nn.functional.pad(drawn, pad), torch.nn.functional.pad(kept, pad)
            drawn = torch.where(kept, drawn, torch.zeros_like(drawn))
            items.append(drawn)
            mask.append(kept)
            priority.append(torch.full_like(drawn, STAGE_PRIORITY[stage]) * kept)
        return SampledNegatives(items=torch.cat(items, 1), priority=torch.cat(priority, 1), mask=torch.cat(mask, 1))

    def global_count(self, pool_size: int, num_requests: int) -> int:
        """Rows drawn from a stage's day pool of ``pool_size`` rows for a day of ``num_requests`` requests."""
        if self.per_stage is None:
            return pool_size
        return min(pool_size, num_requests * self.per_stage)

    def sample_global(
        self, pool_sizes: Mapping[str, int], num_requests: int, generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Draw rows of each stage uniformly without replacement from the whole day (``scope="global"``).

        Args:
            pool_sizes: Number of the day's rows of every stage of :attr:`stages`.
            num_requests: Number of requests of the day.
            generator: The random generator (CPU).

        Returns:
            For every stage, the positions drawn in its day pool (long, sorted), :meth:`global_count` of them.

        Raises:
            KeyError: If a stage's pool size is missing.
        """
        out = {}
        for stage in self.stages:
            if stage not in pool_sizes:
                raise KeyError(f"StageExtraNegativeSampler: no pool for stage {stage!r}; pools: {sorted(pool_sizes)}")
            size = int(pool_sizes[stage])
            count = self.global_count(size, num_requests)
            drawn = torch.randperm(size, generator=generator)[:count] if count < size else torch.arange(size)
            out[stage] = torch.sort(drawn).values
        return out
