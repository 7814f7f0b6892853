import pytest
import torch

from stcrank.data.eshop.reader import read_manifest
from stcrank.data.eshop.synth import explore_config_of, load_world
from stcrank.models.mmoe import MMoE
from stcrank.registry import PluginError
from stcrank.simulation.evaluation import evaluate_focus
from stcrank.simulation.model_policy import (
    ModelPredictor,
    build_ensemble,
    build_policy,
    build_reranker,
    load_task,
)
from stcrank.simulation.policies import TruthPredictor, ValuePolicy, WeightedSum
from stcrank_plugins.ensembles.linear import LinearEnsemble


class OracleNet(torch.nn.Module):
    """A 'model' whose cvr logit is a known function of the item id: the policy must rank by it."""

    tasks = ("cvr",)

    def forward(self, batch):
        return {"cvr": -batch["item_id"].double() / 1000.0}


def test_model_predictor_scores_live_requests_and_the_policy_serves(eshop_store):
    manifest = read_manifest(eshop_store)
    world, config = load_world(manifest), explore_config_of(manifest).focus
    net = MMoE(manifest["feature_sizes"], embedding_dim=4, num_experts=2, expert_hidden=[8], tower_hidden=[4])
    policy = ValuePolicy(ModelPredictor(net, chunk_rows=7), WeightedSum({"cvr": 1.0, "vtr": 0.1, "sdr": 0.1}))
    evaluation = evaluate_focus(world, {"model": policy}, sessions=60, seed=0, config=config)
    depth = evaluation.metrics["model"]["depth"]
    assert depth.shape == (60,) and (depth >= 1).all()


def test_model_policy_ranks_by_the_model(eshop_store):
    manifest = read_manifest(eshop_store)
    world, config = load_world(manifest), explore_config_of(manifest).focus
    seen = {}

    class Spy(ModelPredictor):
        def predict(self, request):
            out = super().predict(request)
            seen["request"], seen["out"] = request, out
            return out

    policy = ValuePolicy(Spy(OracleNet()), WeightedSum({"cvr": 1.0}))
    evaluate_focus(world, {"oracle": policy}, sessions=20, seed=0, config=config)
    request = seen["request"]
    chosen = policy.rank(request, 3)
    expected = torch.topk(-request.candidates.double(), 3, dim=1).indices  # smallest item ids first
    assert torch.equal(chosen, expected)


def test_specs_build_predictors_ensembles_and_rerankers():
    policy = build_policy({"predictor": {"truth": {"noise": 0.3}}, "ensemble": {"cvr": 1.0}, "reranker": "greedy"})
    assert isinstance(policy.predictor, TruthPredictor) and policy.predictor.noise == 0.3
    assert policy.reranker is not None and build_reranker(None) is None
    linear = build_ensemble(
        {"class_path": "stcrank_plugins.ensembles.linear.LinearEnsemble", "init_args": {"weights": {"cvr": 2.0}}}
    )
    assert isinstance(linear, LinearEnsemble) and linear.weights == {"cvr": 2.0}
    assert isinstance(build_ensemble({"name": "linear", "weights": {"cvr": 1.0}}), LinearEnsemble)
    with pytest.raises(ValueError, match="predictor"):
        build_policy({"ensemble": {"cvr": 1.0}})


def test_an_ensemble_class_path_outside_the_group_is_refused_before_it_is_built(tmp_path, monkeypatch):
    (tmp_path / "side_effect_module.py").write_text(
        "BUILT = []\n\nclass Anything:\n    def __init__(self, **kwargs):\n        BUILT.append(kwargs)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"'side_effect_module\.Anything' is not a stcrank\.ensembles plugin"):
        build_ensemble({"class_path": "side_effect_module.Anything", "init_args": {"x": 1}})
    import side_effect_module

    assert side_effect_module.BUILT == []


@pytest.mark.slow
def test_load_task_restores_a_checkpoint(eshop_store, tmp_path):
    from pathlib import Path

    from stcrank.cli import main

    config = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "stcrank" / "moc_1.yaml"
    cli = main(
        [
            "fit",
            "-c",
            str(config),
            f"--data.root={eshop_store}",
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    checkpoint = next(tmp_path.rglob("last.ckpt"))
    task = load_task(config, checkpoint, eshop_store)
    for (name, a), b in zip(cli.model.state_dict().items(), task.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError):
        load_task(config, tmp_path / "missing.ckpt", eshop_store)


def test_e_policy_serves_a_trained_e_model_with_the_cross_stage_ensemble(eshop_store, tmp_path):
    from stcrank.cli import main
    from stcrank.models.esmm import ESMM
    from stcrank.simulation.evaluation import evaluate_explore
    from stcrank.simulation.explore import sample_visits
    from stcrank.simulation.model_policy import EModelPredictor, build_e_policy
    from stcrank.simulation.policies import ERequest
    from stcrank.tasks.esmm import ESMMTask

    manifest = read_manifest(eshop_store)
    world, config = load_world(manifest), explore_config_of(manifest)
    task = ESMMTask(
        lambda s: ESMM(s, embedding_dim=4, num_experts=1, expert_hidden=[8], tower_hidden=[4]),
        feature_sizes=manifest["feature_sizes"],
    )
    lookahead = {"name": "cross_stage", "init_args": {"lookahead_weight": 1.0}}
    policy = build_e_policy({"predictor": {"model": task}, "ensemble": lookahead})
    users, keys = sample_visits(world, 8, seed=0)
    candidates = torch.arange(40).view(8, 5) % world.n_items
    request = ERequest(world=world, visit_key=keys, user=users, candidates=candidates)
    predictions = EModelPredictor(task).predict(request)
    expected = predictions["cvr_e"] + predictions["ctr"] * predictions["sdr_star"] * predictions["cvr_f_star"]
    order = policy.rank(request, 3)
    torch.testing.assert_close(order, torch.topk(expected, 3, dim=1).indices)
    f_policy = build_policy({"predictor": {"truth": {"noise": 0.5}}, "ensemble": {"cvr": 1.0}})
    evaluation = evaluate_explore(world, {"lookahead": (policy, f_policy)}, visits=40, seed=0, config=config)
    assert evaluation.metrics["lookahead"]["f_entries"].shape == (40,)
    # A checkpoint of esmm_explore.yaml serves the same way.
    from pathlib import Path

    esmm = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "stcrank" / "esmm_explore.yaml"
    fitted = main(["fit", "-c", str(esmm), f"--data.root={eshop_store}", f"--trainer.default_root_dir={tmp_path}",
                   "--trainer.fast_dev_run=true"])  # fmt: skip
    fitted.trainer.save_checkpoint(tmp_path / "e.ckpt")
    spec = {"predictor": {"config": str(esmm), "checkpoint": str(tmp_path / "e.ckpt")}, "ensemble": lookahead}
    restored = build_e_policy(spec, data_root=eshop_store)
    served = build_e_policy({"predictor": {"model": fitted.model}, "ensemble": lookahead})
    torch.testing.assert_close(restored.rank(request, 3), served.rank(request, 3))
    with pytest.raises(ValueError, match="data root"):
        build_e_policy({"predictor": {"config": str(esmm), "checkpoint": "x.ckpt"}, "ensemble": lookahead})
    with pytest.raises(ValueError, match="'truth', 'model'"):
        build_e_policy({"predictor": {"nothing": 1}})
