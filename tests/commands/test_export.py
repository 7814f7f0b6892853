"""``stcrank export`` end to end: train DIN and MOC-3 MMoE, export them and the pipeline, serve without stcrank."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from stcrank.cli import console_main, main

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"
K = 5

# Serves the artefacts in a process where stcrank cannot be imported: only the copied loader, numpy,
# onnxruntime and torch.
SERVE_WITHOUT_STCRANK = textwrap.dedent(
    """
    import sys
    for name in ("stcrank", "stcrank_plugins"):
        sys.modules[name] = None  # any import of them now raises ImportError
    try:
        import stcrank  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("stcrank is importable")
    import numpy as np
    folder, inputs, out = sys.argv[1], sys.argv[2], sys.argv[3]
    sys.path.insert(0, folder)
    import stcrank_serving

    feeds = dict(np.load(inputs))
    results = {}
    for graph, prefix in (("din", "din."), ("pipeline", "pipeline.")):
        for fmt in ("onnx", "pt2"):
            artefact = stcrank_serving.load(f"{folder}/{graph}.{fmt}", threads=1)
            mine = {k[len(prefix):]: v for k, v in feeds.items() if k.startswith(prefix)}
            for name, value in artefact.run(**mine).items():
                results[f"{graph}.{fmt}.{name}"] = value
    np.savez(out, **results)
    """
)


def _fit(config: Path, root: Path, folder: Path) -> Path:
    cli = main(["fit", "-c", str(config), f"--data.root={root}", f"--trainer.default_root_dir={folder}",
                "--trainer.fast_dev_run=2", "--trainer.enable_progress_bar=false"])  # fmt: skip
    checkpoint = folder / "model.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    return checkpoint


@pytest.fixture(scope="module")
def exported(recflow_store, eshop_store, tmp_path_factory):
    from stcrank.commands.tune import tune
    from stcrank.tuning.predictions import synthetic_predictions

    folder = tmp_path_factory.mktemp("export")
    din_config = CONFIGS / "recflow" / "rank" / "din_baseline.yaml"
    moc_config = CONFIGS / "stcrank" / "moc_3.yaml"
    din_ckpt = _fit(din_config, recflow_store, folder / "din-run")
    moc_ckpt = _fit(moc_config, eshop_store, folder / "moc-run")
    predictions = synthetic_predictions(folder / "val.parquet", rows=2000, seed=0)
    tune(predictions=str(predictions), n_trials=4, out=str(folder / "tune"), format="json")
    out = folder / "artefacts"
    main(["export", "-c", str(din_config), "--ckpt_path", str(din_ckpt), f"--data.root={recflow_store}",
          "--out", str(out)])  # fmt: skip
    main(["export", "-c", str(moc_config), "--ckpt_path", str(moc_ckpt), f"--data.root={eshop_store}",
          "--pipeline", "--ensemble", str(folder / "tune" / "ensemble.yaml"), "--reranker", "exact",
          "--k", str(K), "--out", str(out)])  # fmt: skip
    return {
        "out": out,
        "din": (din_config, din_ckpt, recflow_store),
        "moc": (moc_config, moc_ckpt, eshop_store),
        "ensemble": folder / "tune" / "ensemble.yaml",
    }


def _din_reference(config, checkpoint, store):
    from stcrank.data.recflow.ranking_data import RecFlowRankingDataModule
    from stcrank.simulation.model_policy import load_task

    task = load_task(config, checkpoint, store)
    _, candidates = RecFlowRankingDataModule(str(store), eval_batch_size=8).test_dataloader()
    batch = next(iter(candidates))
    with torch.no_grad():
        logits = task.network.score_candidates(batch)
    names = ("context", "user", "seq", "seq_mask", "candidates")
    return {f"din.{n}": batch[n].numpy() for n in names}, logits.numpy()


def _pipeline_reference(config, checkpoint, store, ensemble_file):
    import yaml

    from stcrank.data.eshop.datamodule import EShopDataModule
    from stcrank.export.multitask_graphs import column_layout
    from stcrank.simulation.model_policy import build_ensemble, load_task
    from stcrank_plugins.rerankers.exact import ExactReranker

    task = load_task(config, checkpoint, store)
    data = EShopDataModule(str(store), labels={"cvr": "cvr"}, eval_batch_size=256)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    requests = torch.arange(6)
    candidates = torch.randperm(len(batch["item_price"]), generator=torch.Generator().manual_seed(0))[:60].view(6, 10)
    request_names, candidate_names = column_layout(task.network)
    inputs = {
        "pipeline.request_features": torch.stack([batch[n][requests] for n in request_names], -1).numpy(),
        "pipeline.candidate_features": torch.stack([batch[n][candidates] for n in candidate_names], -1).numpy(),
        "pipeline.item_price": batch["item_price"][candidates].float().numpy(),
    }
    columns = {n: batch[n][requests].unsqueeze(1).expand(candidates.shape) for n in request_names}
    columns.update({n: batch[n][candidates] for n in candidate_names})
    columns["item_price"] = batch["item_price"][candidates]
    ensemble = build_ensemble(yaml.safe_load(ensemble_file.read_text())["ensemble"])
    with torch.no_grad():
        predictions = task.predict_probabilities(columns)
    value = ensemble(predictions)
    order = ExactReranker()(value, predictions["sdr"], K)
    return inputs, value.numpy(), order.numpy()


@pytest.mark.slow
def test_exported_models_and_pipeline_serve_the_same_scores_and_lists_without_stcrank(exported, tmp_path):
    out = exported["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["graphs"]) == {"din", "mmoe", "pipeline", "exact"}
    assert (out / "din.onnx").is_file() and (out / "din.pt2").is_file()
    din_inputs, logits = _din_reference(*exported["din"])
    pipeline_inputs, value, order = _pipeline_reference(*exported["moc"], exported["ensemble"])
    np.savez(tmp_path / "inputs.npz", **din_inputs, **pipeline_inputs)
    subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_STCRANK, str(out), str(tmp_path / "inputs.npz"), str(tmp_path / "out")],
        check=True,
        cwd=tmp_path,
    )
    served = dict(np.load(tmp_path / "out.npz"))
    for fmt in ("onnx", "pt2"):
        np.testing.assert_allclose(served[f"din.{fmt}.logits"], logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(served[f"pipeline.{fmt}.value"], value, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(served[f"pipeline.{fmt}.order"], order)


def _one_line_error(capsys, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        console_main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return exited.value.code, lines[0]


@pytest.mark.parametrize(
    ("argv", "status", "expected"),
    [
        (["--reranker", "greedy2"], 1, "--reranker greedy2: choose among greedy, exact"),
        (["-c", "x.yaml"], 1, "give both -c CONFIG and --ckpt_path CKPT"),
        ([], 1, "nothing to export"),
        (["--pipeline", "--reranker", "exact"], 1, "--pipeline needs a trained multi-task model"),
        (
            ["-c", str(CONFIGS / "stcrank" / "moc_3.yaml"), "--ckpt_path", "missing.ckpt"],
            1,
            "missing.ckpt: file not found",
        ),
        (["--k", "ten"], 2, "argument --k: invalid int value: 'ten'"),
    ],
)
def test_export_errors_are_one_line(tmp_path, capsys, argv, status, expected):
    code, line = _one_line_error(capsys, ["export", *argv, "--out", str(tmp_path)])
    assert code == status and line.startswith("stcrank export: error: ") and expected in line, (code, line)


@pytest.mark.slow
def test_export_of_a_reranker_alone(tmp_path, capsys):
    main(["export", "--reranker", "greedy", "--k", "2", "--formats", "onnx", "--out", str(tmp_path)])
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["graphs"]["greedy"]["onnx"] == "greedy.onnx"
    schema = json.loads((tmp_path / "greedy.schema.json").read_text())
    assert schema["metadata"] == {"k": 2, "reranker": "greedy"}
    assert not (tmp_path / "greedy.pt2").exists()


def test_ckpt_path_last_reads_where_fit_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = str(CONFIGS / "recflow/rank/din_baseline.yaml")
    code, line = _one_line_error(capsys, ["export", "-c", config, "--ckpt_path", "last"])
    assert code == 1 and "--ckpt_path last: no runs/recflow/rank/din_baseline/checkpoints/last.ckpt" in line, line


def test_ckpt_path_last_finds_the_checkpoint_of_the_experiment(tmp_path, monkeypatch, capsys):
    from stcrank.export.formats import ExportError

    monkeypatch.chdir(tmp_path)
    saved = tmp_path / "runs/recflow/rank/din_baseline/checkpoints/last.ckpt"
    saved.parent.mkdir(parents=True)
    saved.write_bytes(b"")
    seen = []

    def load_task(config, ckpt_path, data_root):
        seen.append(ckpt_path)
        raise ExportError("stop here")

    monkeypatch.setattr("stcrank.simulation.model_policy.load_task", load_task)
    config = str(CONFIGS / "recflow/rank/din_baseline.yaml")
    _, line = _one_line_error(capsys, ["export", "-c", config, "--ckpt_path", "last"])
    assert seen == ["runs/recflow/rank/din_baseline/checkpoints/last.ckpt"] and "stop here" in line
