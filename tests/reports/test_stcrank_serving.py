import torch

from stcrank.reports.stcrank_serving import SharedFirstRequests, _policies, stage_rows
from stcrank.simulation.config import FocusConfig, WorldConfig
from stcrank.simulation.evaluation import evaluate_focus
from stcrank.simulation.policies import FPredictor, TruthPredictor, WeightedSum
from stcrank.simulation.world import World


class CountingModel(FPredictor):
    """A stand-in for a trained model's predictor (noisy truth) that counts the requests it scores."""

    def __init__(self) -> None:
        self.model = object()  # what arms of one trained model have in common
        self.truth = TruthPredictor(noise=0.7, seed=4)
        self.first_rows = 0

    def predict(self, request):
        if request.request_index == 0:
            self.first_rows += request.session_key.numel()
        return self.truth.predict(request)


def test_arms_of_one_model_share_their_first_requests_and_get_the_same_numbers():
    world = World.build(WorldConfig(users=200, items=3000, brands=100), seed=0)
    config = FocusConfig(candidates=60, page_size=5, max_depth=30)
    model = CountingModel()
    specs = [
        {"name": "a", "predictor": model, "ensemble": WeightedSum({"cvr": 1.0}), "reranker": None},
        {"name": "b", "predictor": model, "ensemble": WeightedSum({"cvr": 1.0, "vtr": 0.1}), "reranker": None},
    ]
    shared = _policies(specs, share_first_requests=True)
    assert all(isinstance(p.predictor, SharedFirstRequests) for p in shared.values())
    ev = evaluate_focus(world, shared, sessions=600, seed=2, config=config)
    assert model.first_rows == 600  # scored once for both arms
    plain = evaluate_focus(world, _policies(specs, share_first_requests=False), sessions=600, seed=2, config=config)
    for name in ("a", "b"):
        for metric, values in ev.metrics[name].items():
            assert torch.equal(values, plain.metrics[name][metric]), (name, metric)
    # a model served by one arm only is not wrapped
    assert not isinstance(_policies(specs[:1], True)["a"].predictor, SharedFirstRequests)


def test_stage_rows():
    tables = [{"stage": "explore", "comparisons": [{"row": "B", "baseline": "A"}]}, {"kind": "hit_rate", "row": "C"}]
    directions = [{"row": "D", "baseline": "A"}]
    assert stage_rows(tables, directions, "explore") == {"A", "B"}
    assert stage_rows(tables, directions, "focus") == {"A", "C", "D"}
