import itertools
import pickle

import numpy as np
import pyarrow.feather as feather
import pytest

from stcrank.data.recflow.schema import ALL_STAGE_COLUMNS, SEQ_LEN, STAGE_ARRAY_COLUMNS, STAGES
from stcrank.data.recflow.synth import synth_recflow
from stcrank.data.recflow.world import SyntheticWorld

DAYS = ["2024-01-13", "2024-01-14", "2024-01-15"]


def _table(path):
    table = feather.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}, table


def _pickle(path):
    with open(path, "rb") as file:  # our own generated file
        return pickle.load(file)


def test_official_layout(recflow_release):
    for day in DAYS:
        for folder, suffix in [
            ("all_stage", "feather"),
            ("realshow", "feather"),
            ("seq_effective_50_dict", "pkl"),
            ("request_id_dict", "pkl"),
            ("ubm_seq_request_id_dict", "pkl"),
        ]:
            assert (recflow_release / folder / f"{day}.{suffix}").is_file()
        assert (recflow_release / "others" / "realshow_video_info_daily" / f"{day}.feather").is_file()
    for name in (
        "id_cnt.pkl",
        "retrieval_test.feather",
        "coarse_rank_test.feather",
        "rank_test.feather",
        "realshow_video_info.feather",
    ):
        assert (recflow_release / "others" / name).is_file()
    assert not (recflow_release / "all_stage" / "2024-01-16.feather").exists()
    id_cnt = _pickle(recflow_release / "others" / "id_cnt.pkl")
    assert id_cnt["photo_id"] == id_cnt["video_id"] == 4000 and id_cnt["user_id"] == 120


def test_feather_schemas_and_the_realshow_subset(recflow_release):
    columns, table = _table(recflow_release / "all_stage" / f"{DAYS[1]}.feather")
    assert table.column_names == list(ALL_STAGE_COLUMNS)
    assert all(str(t) == "int64" for t in table.schema.types)
    flags = np.stack([columns[s] for s in STAGES], axis=1)
    assert np.all(flags.sum(axis=1) == 1)  # one flag per row: the furthest point of the funnel
    shown, shown_table = _table(recflow_release / "realshow" / f"{DAYS[1]}.feather")
    assert shown_table.column_names == list(ALL_STAGE_COLUMNS)
    exposed = columns["realshow"] == 1
    for name in ALL_STAGE_COLUMNS:
        assert np.array_equal(shown[name], columns[name][exposed]), name
    assert np.all(columns["effective_view"][~exposed] == 0) and np.all(columns["playing_time"][~exposed] == 0)
    assert columns["request_timestamp"].min() > 1.7e12  # milliseconds
    assert 1.6e9 < columns["upload_timestamp"].max() < 1.8e9  # seconds
    per_request = np.bincount(columns["request_id"][exposed])
    assert per_request.max() <= 6


def test_request_id_dict_matches_all_stage(recflow_release):
    columns, _ = _table(recflow_release / "all_stage" / f"{DAYS[0]}.feather")
    stages = _pickle(recflow_release / "request_id_dict" / f"{DAYS[0]}.pkl")
    assert set(stages) == set(np.unique(columns["request_id"]).tolist())
    matrix = np.stack([columns[name] for name in STAGE_ARRAY_COLUMNS], axis=1)
    for request_id in list(stages)[:60]:
        for stage in STAGES:
            rows = (columns["request_id"] == request_id) & (columns[stage] == 1)
            if stage not in stages[request_id]:
                assert not rows.any()  # a key is absent exactly when the stage is empty
                continue
            array = stages[request_id][stage]
            assert array.dtype == np.int64 and array.shape[1] == 8
            assert np.array_equal(array, matrix[rows])
    absent_keys = sum(len(STAGES) - len(per_stage) for per_stage in stages.values())
    counts = np.bincount(columns["request_id"] * 8 + np.argmax(np.stack([columns[s] for s in STAGES], 1), 1))
    assert absent_keys == len(stages) * len(STAGES) - np.count_nonzero(counts)


def test_sequences_are_left_padded_strictly_earlier_and_cross_days(recflow_release):
    columns, _ = _table(recflow_release / "all_stage" / f"{DAYS[2]}.feather")
    seq = _pickle(recflow_release / "seq_effective_50_dict" / f"{DAYS[2]}.pkl")
    assert set(seq) == set(np.unique(columns["request_id"]).tolist())
    first = np.unique(columns["request_id"], return_index=True)
    start_of_day = columns["request_timestamp"].min()
    crossing = 0
    for request_id, row in zip(*first, strict=True):
        array = seq[int(request_id)]
        assert array.shape == (SEQ_LEN, 10) and array.dtype == np.int64
        valid = array[:, 7] > 0
        n = int(valid.sum())
        assert valid[SEQ_LEN - n :].all() and not array[: SEQ_LEN - n].any()  # left-padded with zeros
        times = array[valid, 7]
        assert np.all(times < columns["request_timestamp"][row]) and np.all(np.diff(times) > 0)
        crossing += bool(n and times[0] < start_of_day)
    assert crossing > 0


def test_ubm_dict_covers_every_referenced_request(recflow_release):
    seq = _pickle(recflow_release / "seq_effective_50_dict" / f"{DAYS[0]}.pkl")
    ubm = _pickle(recflow_release / "ubm_seq_request_id_dict" / f"{DAYS[0]}.pkl")
    referenced = {int(r) for a in seq.values() for r in a[a[:, 7] > 0, 9]}
    assert referenced and set(ubm) == referenced
    first_request = int(_table(recflow_release / "all_stage" / f"{DAYS[0]}.feather")[0]["request_id"].min())
    assert min(referenced) < first_request  # reaches into the unwritten history
    for request_id in list(referenced)[:20]:
        shown = ubm[request_id]["realshow"]
        # every past behaviour of that request is one of its exposures, with effective_view = 1
        behaviours = np.concatenate([a[(a[:, 9] == request_id) & (a[:, 7] > 0), 0] for a in seq.values()])
        assert set(behaviours.tolist()) <= set(shown[shown[:, 7] == 1, 0].tolist())


def test_the_funnel_carries_the_true_preference(recflow_release):
    columns, _ = _table(recflow_release / "all_stage" / f"{DAYS[1]}.feather")
    world = SyntheticWorld.create(120, 4000, 0)
    affinity = world.affinity(columns["user_id"], columns["video_id"])
    watch = world.effective_view_probability(columns["user_id"], columns["video_id"])
    order = ["prerank_neg", "coarse_neg", "rank_neg", "rerank_neg", "rank_pos", "rerank_pos", "realshow"]
    means = [affinity[columns[s] == 1].mean() for s in order]
    assert all(a < b for a, b in itertools.pairwise(means)), dict(zip(order, means, strict=True))
    rates = [watch[columns[s] == 1].mean() for s in order]
    assert all(a < b for a, b in itertools.pairwise(rates)), dict(zip(order, rates, strict=True))
    exposed = columns["realshow"] == 1
    observed = columns["effective_view"][exposed].mean()
    assert 0.2 < observed < 0.8 and abs(observed - watch[exposed].mean()) < 0.05


def test_deterministic_under_the_seed(make_release):
    a, b, c = make_release("a"), make_release("b"), make_release("c", seed=2)
    for name in ("all_stage", "realshow"):
        table_a = feather.read_table(a / name / "2024-01-14.feather")
        assert table_a.equals(feather.read_table(b / name / "2024-01-14.feather"))
        assert not table_a.equals(feather.read_table(c / name / "2024-01-14.feather"))
    seq_a, seq_b = (_pickle(x / "seq_effective_50_dict" / "2024-01-14.pkl") for x in (a, b))
    assert seq_a.keys() == seq_b.keys() and all(np.array_equal(seq_a[k], seq_b[k]) for k in seq_a)


def test_oversize_exposures_and_options(make_release):
    release = make_release(oversize_exposure_rate=0.3, start_date="2024-02-01")
    columns, _ = _table(release / "realshow" / "2024-02-02.feather")
    per_request = np.unique(columns["request_id"], return_counts=True)[1]
    assert per_request.max() in (7, 8) and (per_request > 6).mean() > 0.1
    with pytest.raises(FileExistsError):
        synth_recflow(out=str(release), users=5, days=1)
    with pytest.raises(ValueError, match="strictly decrease"):
        synth_recflow(out=str(release.parent / "bad"), retrieved=50, prerank_keep=60)


def test_pickles_name_the_numpy1_globals_of_the_real_release(recflow_release):
    import pickletools

    for folder in ("request_id_dict", "seq_effective_50_dict", "ubm_seq_request_id_dict"):
        data = (recflow_release / folder / f"{DAYS[1]}.pkl").read_bytes()
        names = {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}
        assert names == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}, folder


def test_category_level_one_never_takes_the_padding_value_2(recflow_release):
    # The reference code embeds category_level_one unshifted with padding_idx=2 (spec section 1.4).
    columns, _ = _table(recflow_release / "all_stage" / f"{DAYS[0]}.feather")
    categories = np.unique(columns["category_level_one"])
    assert 2 not in categories and categories.min() >= 0
    assert {0, 1} & set(categories.tolist()) and categories.max() > 2  # both sides of the gap are used
    stages = _pickle(recflow_release / "request_id_dict" / f"{DAYS[0]}.pkl")
    assert all(2 not in array[:, 6] for per_stage in stages.values() for array in per_stage.values())
    seq = _pickle(recflow_release / "seq_effective_50_dict" / f"{DAYS[2]}.pkl")
    assert all(2 not in array[array[:, 7] > 0, 3] for array in seq.values())
    id_cnt = _pickle(recflow_release / "others" / "id_cnt.pkl")
    assert categories.max() < id_cnt["category_level_one"] + 2  # the reference tables have id_cnt + 2 rows
