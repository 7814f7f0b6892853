import pyarrow.parquet as pq
import pytest
import torch

from stcrank.tasks.predictions import PredictionsWriteError, PredictionWriter, prediction_rows
from stcrank.tuning.predictions import read_predictions


def test_rows_are_the_kept_elements_in_row_major_order():
    keep = torch.tensor([[True, False, True], [False, True, False]])
    rows = prediction_rows(
        keep,
        request_id=torch.tensor([[7], [8]]).expand(2, 3),
        item_id=torch.tensor([[1, 2, 3], [4, 5, 6]]),
        predictions={"cvr": torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), "ctr": torch.full((2, 3), 0.9)},
        labels={"cvr": torch.tensor([[1, 0, 0], [0, 1, 0]])},
        extra={"stage": torch.tensor([[6, 5, 4], [3, 2, 1]])},
    )
    assert rows["request_id"].tolist() == [7, 7, 8] and rows["item_id"].tolist() == [1, 3, 5]
    assert rows["pred_cvr"].tolist() == pytest.approx([0.1, 0.3, 0.5]) and rows["label_cvr"].tolist() == [1, 0, 1]
    assert rows["mask_cvr"].tolist() == [True, True, True] and rows["stage"].tolist() == [6, 4, 2]
    assert "pred_ctr" not in rows and rows["score_ctr"].tolist() == pytest.approx([0.9] * 3)


class _Trainer:
    global_rank, world_size = 0, 1


def test_the_writer_streams_batches_into_one_file_tune_reads(tmp_path):
    writer = PredictionWriter(tmp_path / "p.parquet")
    writer.on_predict_start(_Trainer(), None)
    for start in (0, 3):
        batch = prediction_rows(
            torch.ones(3, dtype=torch.bool),
            request_id=torch.arange(start, start + 3),
            item_id=torch.arange(3),
            predictions={"cvr": torch.rand(3)},
            labels={"cvr": torch.tensor([0.0, 1.0, 0.0])},
        )
        writer.write_on_batch_end(_Trainer(), None, batch, None, None, 0, 0)
    assert not (tmp_path / "p.parquet").exists()  # nothing visible before the run ends
    writer.on_predict_end(_Trainer(), None)
    assert pq.read_table(tmp_path / "p.parquet").num_rows == 6 == writer.rows
    assert read_predictions(tmp_path / "p.parquet").tasks == ("cvr",)


def test_the_writer_refuses_an_empty_run_and_ragged_columns(tmp_path):
    writer = PredictionWriter(tmp_path / "p.parquet")
    writer.on_predict_start(_Trainer(), None)
    with pytest.raises(PredictionsWriteError, match="one length"):
        writer.write_on_batch_end(_Trainer(), None, {"a": torch.zeros(2), "b": torch.zeros(3)}, None, None, 0, 0)
    with pytest.raises(PredictionsWriteError, match="scored no row"):
        writer.on_predict_end(_Trainer(), None)
