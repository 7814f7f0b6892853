"""Embedding-table sizes: what the data holds, checked against ``others/id_cnt.pkl``.

A feature's table has one row per id the store holds (the largest id observed in any file the import wrote,
plus one) and two more: row 0 is padding after the batches' +1 shift, and the last stays free as in the reference
code (``count + 2``). ``id_cnt`` does not size anything: a count larger than the data (a huge or corrupt
``id_cnt``) would allocate tables for ids that never occur, and ids beyond it mean the two disagree, which is
logged with the numbers. A table too large to allocate is refused by the data module
(``--data.max_feature_size``) before any memory is taken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from stcrank.data.recflow.importer.rows import Accumulator
from stcrank.data.recflow.official import ReleaseLayout
from stcrank.data.recflow.pickle_contents import read_id_cnt as read_id_cnt_pickle
from stcrank.data.recflow.schema import ID_CNT_ALIASES, ID_CNT_FEATURES, TIME_CARDINALITY

logger = logging.getLogger(__name__)


def read_id_cnt(layout: ReleaseLayout) -> dict[str, int]:
    """``others/id_cnt.pkl`` with canonical keys (``photo_id`` accepted for ``video_id``); {} if absent."""
    if not layout.id_cnt.is_file():
        logger.warning("%s: absent; feature sizes come from the ids observed in the data alone", layout.id_cnt)
        return {}
    raw = read_id_cnt_pickle(layout.id_cnt)
    out: dict[str, int] = {}
    for feature in ID_CNT_FEATURES:
        for spelling in ID_CNT_ALIASES.get(feature, (feature,)):
            if spelling in raw:
                out[feature] = raw[spelling]
                break
    missing = [feature for feature in ID_CNT_FEATURES if feature not in out]
    if missing:
        logger.warning("%s: no count for %s; their sizes come from the data alone", layout.id_cnt, missing)
    return out


def feature_sizes(id_cnt: Mapping[str, int], acc: Accumulator) -> dict[str, int]:
    """Embedding-table sizes from the ids observed (largest + 1, + 2), each compared with ``id_cnt``."""
    sizes: dict[str, int] = {}
    for feature in ID_CNT_FEATURES:
        observed = acc.observed_max.get(feature, -1)
        if feature in id_cnt and observed >= id_cnt[feature]:
            logger.warning(
                "ids of %r up to %d occur but id_cnt says %d; the table is sized from the data (%d rows)",
                feature,
                observed,
                id_cnt[feature],
                observed + 3,
            )
        sizes[feature] = observed + 1 + 2
    for name, count in TIME_CARDINALITY.items():
        sizes[name] = count + 2
    return sizes
