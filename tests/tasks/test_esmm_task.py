import lightning as L
import pyarrow.parquet as pq
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from stcrank.data.eshop.datamodule import split_of_visit
from stcrank.data.eshop.explore_datamodule import EShopExploreDataModule
from stcrank.data.eshop.synth import synth_eshop
from stcrank.models.esmm import ESMM
from stcrank.tasks.esmm import ESMMTask


def spearman(a, b):
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


@pytest.fixture
def one_thread():
    # Small networks train fastest on one thread; more threads than free cores make every step wait.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_trained_factors_rank_exposures_by_the_truth(tmp_path, one_thread):
    root = tmp_path / "logs"
    synth_eshop(out=str(root), users=300, sessions=4000, items=600, candidates=60, seed=1)
    dm = EShopExploreDataModule(str(root), batch_size=256)
    dm.setup()
    L.seed_everything(0)
    network = lambda sizes: ESMM(sizes, embedding_dim=8, expert_hidden=[32, 16], tower_hidden=[16], num_experts=2)  # noqa: E731
    task = ESMMTask(network, lr=3e-3, feature_sizes=dm.feature_sizes)
    trainer = L.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(task, datamodule=dm)
    test = dm.splits["test"].columns
    with torch.no_grad():
        p = task.predict_probabilities(test)
    assert {"ctr", "sdr_star", "cvr_f_star", "cvr_e", "ctr_sdr_cvrf"} <= set(p)
    for product in ("ctr", "ctr_sdr", "ctr_sdr_cvrf", "cvr_e"):
        assert float(binary_auroc(p[product], test[f"label_{product}"].long())) > 0.57, product
        # Calibrated on the exposure space: the mean prediction is near the label rate.
        assert float(p[product].mean()) == pytest.approx(float(test[f"label_{product}"].mean()), rel=0.8)
    # The factors follow the simulator's truth of the same exposures (truth columns of the E log).
    e_log = pq.read_table(root / "e_log.parquet").to_pandas()
    rows = split_of_visit(torch.tensor(e_log["visit_id"].values), 0.1, 0.1, 0).numpy() == 2
    truth = {k: torch.tensor(e_log.loc[rows, f"truth_{k}"].values) for k in ("ctr", "swipe", "detail_cvr")}
    assert spearman(p["ctr"].double(), truth["ctr"]) > 0.25
    assert spearman(p["sdr_star"].double(), truth["swipe"]) > 0.2
    assert spearman(p["ctr_sdr"].double(), truth["ctr"] * truth["swipe"]) > 0.3


def test_serving_returns_factors_and_products(eshop_store):
    dm = EShopExploreDataModule(str(eshop_store))
    net = lambda sizes: ESMM(sizes, embedding_dim=4, expert_hidden=[8], tower_hidden=[4], num_experts=1)  # noqa: E731
    task = ESMMTask(net, feature_sizes=dm.feature_sizes)
    assert task.tasks == ["ctr", "ctr_sdr", "ctr_sdr_cvrf", "cvr_e"]
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    out = task.predict_step(batch, 0)
    assert {"pred_ctr", "pred_sdr_star", "pred_cvr_f_star", "pred_cvr_e", "label_ctr_sdr_cvrf"} <= set(out)
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)


def test_a_network_without_factor_probabilities_is_rejected():
    from stcrank.errors import ConfigError
    from stcrank.models.mmoe import MMoE

    with pytest.raises(ConfigError, match=r"--model\.network MMoE has no probabilities"):
        ESMMTask(lambda sizes: MMoE(sizes, tasks=["cvr"]), feature_sizes={"item_id": 4})


def test_predict_writes_products_and_factors_with_their_labels(eshop_store, tmp_path):
    from pathlib import Path

    from stcrank.cli import main
    from stcrank.tuning.predictions import read_predictions

    config = Path(__file__).resolve().parents[2] / "configs/experiments/stcrank/esmm_explore.yaml"
    path = tmp_path / "esmm.parquet"
    args = ["predict", "-c", str(config), f"--data.root={eshop_store}", "--untrained", f"--predictions={path}"]
    cli = main([*args, f"--trainer.logger.init_args.save_dir={tmp_path}"])
    cached = read_predictions(path)
    assert set(cached.tasks) == {"ctr", "ctr_sdr", "ctr_sdr_cvrf", "cvr_e", "sdr_star", "cvr_f_star", "cvr_detail"}
    columns = cli.datamodule.splits["val"].columns
    # sdr_star is the swipe among clicks: the label of ctr_sdr on the clicked exposures
    clicked = columns["label_ctr"] > 0.5
    assert torch.equal(cached.masks["sdr_star"], clicked)
    assert torch.equal(cached.labels["sdr_star"][clicked], columns["label_ctr_sdr"][clicked].bool())
