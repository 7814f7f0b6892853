import numpy as np
import pytest

from stcrank.data.recflow.domains import FLAG, ID, POSITION, ROW_DOMAINS, SEQ_DOMAINS, STAGE_ARRAY_DOMAINS, TIME_MS
from stcrank.data.recflow.errors import RecFlowFormatError
from stcrank.data.recflow.schema import ALL_STAGE_COLUMNS, SEQ_ARRAY_COLUMNS, STAGE_ARRAY_COLUMNS


def test_every_column_has_a_domain_whose_values_fit_its_type():
    assert set(ROW_DOMAINS) == set(ALL_STAGE_COLUMNS)
    assert set(SEQ_DOMAINS) == set(SEQ_ARRAY_COLUMNS) and set(STAGE_ARRAY_DOMAINS) == set(STAGE_ARRAY_COLUMNS)
    for domain in (*ROW_DOMAINS.values(), *SEQ_DOMAINS.values(), *STAGE_ARRAY_DOMAINS.values()):
        info = np.iinfo(domain.dtype)
        assert info.min <= domain.low <= domain.high <= info.max


def test_values_are_checked_before_they_are_narrowed():
    assert ID.check(np.array([0, 5], np.uint64), "f", "video_id").dtype == np.int32
    assert FLAG.check(np.array([0, 1]), "f", "like").dtype == np.int8
    assert POSITION.check(np.array([-1, 3]), "f", "rank_index").tolist() == [-1, 3]
    with pytest.raises(RecFlowFormatError, match=r"f: column 'like' has values in \[0, 300\]; expected 0 or 1"):
        FLAG.check(np.array([0, 300]), "f", "like")  # int8 would make it 44
    with pytest.raises(RecFlowFormatError, match=r"\[0, 18446744073709551615\]; expected a time in milliseconds"):
        TIME_MS.check(np.array([0, 2**64 - 1], np.uint64), "f", "time_ms")  # int64 would make it -1
    with pytest.raises(RecFlowFormatError, match=r"column 'age' \(index 3 of the arrays\) has dtype float64"):
        ID.check(np.array([0.5]), "f", "age", 3)
    assert ID.check(np.zeros(0, np.int64), "f", "age").dtype == np.int32
