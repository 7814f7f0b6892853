"""Embedding-table sizes: ``others/id_cnt.pkl`` and the ids observed in the data."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.official import ReleaseLayout
from stcrank.data.recflow.pickles import load_pickle
from stcrank.data.recflow.schema import ID_CNT_ALIASES, ID_CNT_FEATURES, TIME_CARDINALITY

logger = logging.getLogger(__name__)


def read_id_cnt(layout: ReleaseLayout) -> dict[str, int]:
    """``others/id_cnt.pkl`` with canonical keys (``photo_id`` accepted for ``video_id``); {} if absent."""
    if not layout.id_cnt.is_file():
        logger.warning("%s: absent; feature sizes come from the ids observed in the data", layout.id_cnt)
        return {}
    raw = load_pickle(layout.id_cnt)
    if not isinstance(raw, dict):
        raise RecFlowFormatError(f"{layout.id_cnt}: expected a dict feature name -> cardinality, got {type(raw)}")
    out: dict[str, int] = {}
    for feature in ID_CNT_FEATURES:
        for spelling in ID_CNT_ALIASES.get(feature, (feature,)):
            if spelling in raw:
                try:
                    out[feature] = int(raw[spelling])
                except (TypeError, ValueError) as error:
                    raise RecFlowFormatError(
                        f"{layout.id_cnt}: key {spelling!r} has value {raw[spelling]!r}; expected an integer count"
                    ) from error
                break
    return out


def feature_sizes(id_cnt: Mapping[str, int], acc: Accumulator) -> dict[str, int]:
    """Embedding-table sizes: count + 2 (index 0 is padding after the +1 shift; count + 1 stays valid)."""
    sizes: dict[str, int] = {}
    for feature in ID_CNT_FEATURES:
        count = max(id_cnt.get(feature, 0), acc.observed_max.get(feature, -1) + 1)
        if feature in id_cnt and acc.observed_max.get(feature, -1) >= id_cnt[feature]:
            logger.warning(
                "id_cnt[%r] = %d but ids up to %d occur; sizing the table from the data",
                feature,
                id_cnt[feature],
                acc.observed_max[feature],
            )
        sizes[feature] = count + 2
    for name, count in TIME_CARDINALITY.items():
        sizes[name] = count + 2
    return sizes
