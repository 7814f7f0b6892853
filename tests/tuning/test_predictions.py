import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from stcrank.tuning.predictions import (
    PredictionsFileError,
    predicted_tasks,
    read_predictions,
    synthetic_predictions,
    write_predictions,
)


def _tensors():
    predictions = {"cvr": torch.tensor([0.1, 0.9, 0.4, 0.3]), "vtr": torch.tensor([0.5, 0.2, 0.7, 0.6])}
    labels = {"cvr": torch.tensor([0.0, 1.0, 0.0, 1.0]), "vtr": torch.tensor([True, False, True, False])}
    masks = {"cvr": torch.ones(4, dtype=torch.bool), "vtr": torch.tensor([True, True, False, True])}
    return predictions, labels, masks


def _good_columns():
    return {
        "pred_cvr": pa.array([0.1, 0.9, 0.4], pa.float32()),
        "label_cvr": pa.array([0, 1, 1], pa.int64()),
        "mask_cvr": pa.array([True, True, True]),
    }


def _write_raw(path, columns):
    pq.write_table(pa.table(columns), path)
    return path


def test_round_trip_keeps_values_and_types(tmp_path):
    predictions, labels, masks = _tensors()
    extra = {"request_id": torch.tensor([7, 7, 8, 8]), "position": torch.tensor([0, 1, 0, 1])}
    path = write_predictions(tmp_path / "sub" / "val.parquet", predictions, labels, masks, extra)
    assert sorted(p.name for p in path.parent.iterdir()) == ["val.parquet"]  # no temporary file left behind
    cached = read_predictions(path)
    assert cached.tasks == ("cvr", "vtr") and cached.num_rows == 4
    assert cached.predictions["cvr"].dtype == torch.float64
    assert torch.allclose(cached.predictions["vtr"], predictions["vtr"].double())
    assert cached.labels["cvr"].tolist() == [False, True, False, True]
    assert cached.labels["vtr"].dtype == torch.bool and cached.masks["vtr"].tolist() == [True, True, False, True]
    assert cached.extra["request_id"].tolist() == [7, 7, 8, 8] and set(cached.extra) == {"request_id", "position"}
    assert read_predictions(path, tasks=["vtr"]).tasks == ("vtr",)
    assert predicted_tasks(path) == ("cvr", "vtr")


def test_bfloat16_predictions_and_integer_labels_are_accepted(tmp_path):
    predictions, labels, masks = _tensors()
    predictions["cvr"] = predictions["cvr"].to(torch.bfloat16)
    labels["cvr"] = labels["cvr"].long()
    cached = read_predictions(write_predictions(tmp_path / "v.parquet", predictions, labels, masks))
    assert cached.labels["cvr"].tolist() == [False, True, False, True]


def test_labels_outside_the_mask_may_be_anything_but_nan(tmp_path):
    columns = {**_good_columns(), "label_cvr": pa.array([0.0, 1.0, 0.5]), "mask_cvr": pa.array([True, True, False])}
    cached = read_predictions(_write_raw(tmp_path / "v.parquet", columns))
    assert cached.masks["cvr"].tolist() == [True, True, False]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"mask_cvr": None}, r"column 'mask_cvr': missing"),
        ({"mask_cvr": pa.array([1, 1, 1], pa.int8())}, r"column 'mask_cvr': expected type bool, found int8"),
        ({"pred_cvr": pa.array([1, 2, 3])}, r"column 'pred_cvr': expected a floating-point type"),
        ({"label_cvr": pa.array(["0", "1", "1"])}, r"column 'label_cvr': expected 0/1 labels of type"),
        (
            {"pred_cvr": pa.array([0.1, float("nan"), 0.2])},
            r"column 'pred_cvr': expected finite .* first at row\(s\) 1",
        ),
        ({"pred_cvr": pa.array([0.1, float("inf"), 0.2])}, r"column 'pred_cvr': expected finite"),
        ({"label_cvr": pa.array([0.0, float("nan"), 1.0])}, r"column 'label_cvr': expected 0/1 labels, found NaN"),
        (
            {"label_cvr": pa.array([0, 2, 1])},
            r"column 'label_cvr': expected 0/1 labels where mask_cvr is true, found \[2\]",
        ),
        ({"pred_cvr": pa.array([0.1, None, 0.3])}, r"column 'pred_cvr': expected no nulls, found 1"),
        ({"mask_cvr": pa.array([False, False, False])}, r"column 'mask_cvr': selects no row"),
        ({"request_id": pa.array([1.0, 2.0, 3.0])}, r"column 'request_id': expected an integer type"),
    ],
)
def test_bad_columns_name_the_file_the_column_and_the_expectation(tmp_path, change, match):
    columns = _good_columns()
    for name, array in change.items():
        if array is None:
            del columns[name]
        else:
            columns[name] = array
    path = _write_raw(tmp_path / "bad.parquet", columns)
    with pytest.raises(PredictionsFileError, match=match) as error:
        read_predictions(path)
    assert str(error.value).startswith(str(path))


def test_unreadable_files(tmp_path):
    with pytest.raises(PredictionsFileError, match=r"missing\.parquet: file not found"):
        read_predictions(tmp_path / "missing.parquet")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    with pytest.raises(PredictionsFileError, match=r"garbage\.parquet: cannot read as Parquet"):
        read_predictions(garbage)
    good = _write_raw(tmp_path / "good.parquet", _good_columns())
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(PredictionsFileError, match=r"truncated\.parquet: cannot read as Parquet"):
        read_predictions(truncated)
    empty = {name: array.slice(0, 0) for name, array in _good_columns().items()}
    with pytest.raises(PredictionsFileError, match="holds no row"):
        read_predictions(_write_raw(tmp_path / "empty.parquet", empty))
    with pytest.raises(PredictionsFileError, match=r"no 'pred_<task>' column"):
        read_predictions(_write_raw(tmp_path / "none.parquet", {"x": pa.array([1])}))


def test_unknown_task_lists_the_tasks_of_the_file(tmp_path):
    path = _write_raw(tmp_path / "v.parquet", _good_columns())
    with pytest.raises(PredictionsFileError, match=r"column 'pred_sdr': missing.*tasks in the file: \['cvr'\]"):
        read_predictions(path, tasks=["cvr", "sdr"])


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p, y, m: y.pop("vtr"), "must name the same tasks"),
        (lambda p, y, m: p.update(cvr=torch.zeros(2, 2)), r"'pred_cvr': expected a 1-D tensor"),
        (lambda p, y, m: p.update(vtr=torch.zeros(3)), r"'pred_vtr': expected 4 rows"),
        (lambda p, y, m: m.update(cvr=torch.ones(4)), r"'mask_cvr': expected type bool, found float"),
        (lambda p, y, m: p.update(cvr=torch.tensor([0.1, float("nan"), 0.2, 0.3])), r"'pred_cvr': expected finite"),
        (lambda p, y, m: y.update(cvr=torch.tensor([0.0, 0.5, 1.0, 1.0])), r"'label_cvr': expected 0/1 labels"),
        (lambda p, y, m: p.update(cvr=[0.1, 0.2, 0.3, 0.4]), r"'pred_cvr': expected a torch.Tensor"),
    ],
)
def test_writing_validates_like_reading(tmp_path, mutate, match):
    predictions, labels, masks = _tensors()
    mutate(predictions, labels, masks)
    with pytest.raises(PredictionsFileError, match=match):
        write_predictions(tmp_path / "v.parquet", predictions, labels, masks)
    assert not list(tmp_path.iterdir())


def test_extra_columns_may_not_look_like_task_columns(tmp_path):
    predictions, labels, masks = _tensors()
    with pytest.raises(PredictionsFileError, match="'pred_sdr': extra column names may not start with"):
        write_predictions(tmp_path / "v.parquet", predictions, labels, masks, {"pred_sdr": torch.zeros(4)})


def test_synthetic_file_is_valid_and_masks_sdr_to_first_positions(tmp_path):
    cached = read_predictions(synthetic_predictions(tmp_path / "s.parquet", rows=1000, seed=3))
    assert cached.tasks == ("vtr", "cvr", "sdr")
    position = cached.extra["position"]
    assert torch.equal(cached.masks["sdr"], position == 0) and bool(cached.masks["cvr"].all())
    assert 0.01 < cached.labels["cvr"].float().mean() < 0.1
    again = read_predictions(synthetic_predictions(tmp_path / "t.parquet", rows=1000, seed=3))
    assert torch.equal(again.predictions["cvr"], cached.predictions["cvr"])
    assert np.all(np.isfinite(cached.predictions["vtr"].numpy()))
