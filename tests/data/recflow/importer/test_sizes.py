"""Embedding-table sizes come from the data, checked against id_cnt; a table too large is refused before allocation."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from stcrank.data.recflow.datamodule import RecFlowDataModule
from stcrank.data.recflow.importer import import_recflow
from stcrank.errors import ConfigError


def _dump(obj, path):
    with open(path, "wb") as file:
        pickle.dump(obj, file, protocol=4)


def test_a_huge_id_cnt_does_not_size_the_tables(make_release, tmp_path):
    release = make_release(days=1)
    path = release / "others" / "id_cnt.pkl"
    with open(path, "rb") as file:
        id_cnt = pickle.load(file)
    _dump({**id_cnt, "video_id": 2**31 - 1, "photo_id": 2**31 - 1}, path)  # 2**31 rows: 64 GB at 8 dims
    manifest = import_recflow(src=str(release), dst=str(tmp_path / "store"))
    assert manifest["id_cnt"]["video_id"] == 2**31 - 1
    assert manifest["feature_sizes"]["video_id"] == manifest["observed_max_id"]["video_id"] + 3 < 10_000
    module = RecFlowDataModule(str(tmp_path / "store"))
    assert module.feature_sizes["video_id"] < 10_000


def test_one_corrupt_id_is_refused_by_the_data_module_before_any_allocation(make_release, tmp_path, caplog):
    release = make_release(days=1)
    for table in ("all_stage", "realshow"):
        path = release / table / "2024-01-13.feather"
        data = feather.read_table(path)
        video = data.column("video_id").to_numpy().copy()
        video[0] = 10**9  # one id of a billion: an embedding table of 32 GB at 8 dims
        feather.write_feather(
            data.set_column(data.column_names.index("video_id"), "video_id", pa.array(video)), str(path)
        )
    manifest = import_recflow(src=str(release), dst=str(tmp_path / "store"))
    assert manifest["feature_sizes"]["video_id"] == 10**9 + 3
    assert "ids of 'video_id' up to 1000000000 occur but id_cnt says" in caplog.text
    module = RecFlowDataModule(str(tmp_path / "store"))
    too_large = r"'video_id' needs an embedding table of 1,000,000,003 rows \(its largest id is 1,000,000,000\)"
    with pytest.raises(ConfigError, match=too_large + r", over --data\.max_feature_size 100,000,000"):
        module.feature_sizes  # noqa: B018 - the property is the check
    assert RecFlowDataModule(str(tmp_path / "store"), max_feature_size=2 * 10**9).feature_sizes["video_id"] == 10**9 + 3
