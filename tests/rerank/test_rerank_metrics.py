import json
import subprocess
import sys
import textwrap

import pytest
import torch

from stcrank.rerank import hit_rate_at_k, sequence_value
from stcrank.rerank.metrics import RerankMetrics


def _instances(seed: int, requests: int = 40, n: int = 8, k: int = 5):
    generator = torch.Generator().manual_seed(seed)
    value = torch.rand(requests, n, generator=generator)
    continue_prob = torch.rand(requests, n, generator=generator)
    pointwise = torch.argsort(value, dim=1, descending=True)[:, :k]
    shuffled = torch.argsort(torch.rand(requests, n, generator=generator), dim=1)[:, :k]
    by_reach = torch.argsort(value * continue_prob, dim=1, descending=True)[:, :k]
    return value, continue_prob, {"exact": by_reach, "greedy": pointwise, "random": shuffled}, pointwise


def test_metrics_equal_the_direct_formulas_over_batches():
    value, continue_prob, orders, pointwise = _instances(0)
    metric = RerankMetrics(["exact", "greedy", "random"], ks=[1, 3])
    for part in range(0, 40, 15):  # uneven batches
        rows = slice(part, part + 15)
        metric.update(value[rows], continue_prob[rows], {n: o[rows] for n, o in orders.items()}, pointwise[rows])
    out = metric.compute()
    means = {n: sequence_value(value.double(), continue_prob.double(), o).mean() for n, o in orders.items()}
    for name, order in orders.items():
        assert out[f"{name}/value"] == pytest.approx(float(means[name]), abs=1e-12)
        gap = (means["exact"] - means[name]) / means["exact"].abs()
        assert out[f"{name}/gap"] == pytest.approx(float(gap), abs=1e-12)
        for k in (1, 3):
            assert out[f"{name}/hit@{k}"] == pytest.approx(float(hit_rate_at_k(pointwise, order, k)), abs=1e-6)
    assert out["exact/gap"] == 0 and out["greedy/hit@3"] == 1.0


def test_missing_list_and_bad_arguments_are_refused():
    value, continue_prob, orders, pointwise = _instances(1)
    with pytest.raises(KeyError, match="random"):
        RerankMetrics(["exact", "random"]).update(value, continue_prob, {"exact": orders["exact"]}, pointwise)
    with pytest.raises(ValueError, match="distinct"):
        RerankMetrics(["exact", "exact"])
    with pytest.raises(ValueError, match="ks"):
        RerankMetrics(["exact"], ks=[0])


WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    sys.path.insert(0, sys.argv[4])
    from test_rerank_metrics import _instances
    from stcrank.rerank.metrics import RerankMetrics

    rank, world, store = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    value, continue_prob, orders, pointwise = _instances(2, requests=37)
    rows = torch.arange(37)[rank::world]  # disjoint shards of uneven sizes
    metric = RerankMetrics(["exact", "greedy", "random"], ks=[1, 3, 5])
    for chunk in rows.split(6):
        metric.update(value[chunk], continue_prob[chunk], {n: o[chunk] for n, o in orders.items()}, pointwise[chunk])
    out = {name: float(v) for name, v in metric.compute().items()}
    if rank == 0:
        print(json.dumps(out))
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_two_gloo_processes_over_disjoint_shards_equal_one_process(tmp_path):
    from pathlib import Path

    value, continue_prob, orders, pointwise = _instances(2, requests=37)
    single = RerankMetrics(["exact", "greedy", "random"], ks=[1, 3, 5])
    single.update(value, continue_prob, orders, pointwise)
    expected = {name: float(v) for name, v in single.compute().items()}

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    here = str(Path(__file__).parent)
    store = tmp_path / "store"
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), "2", str(store), here], stdout=subprocess.PIPE, text=True
        )
        for rank in range(2)
    ]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    synced = json.loads(outputs[0].strip().splitlines()[-1])
    assert synced.keys() == expected.keys()
    for name, value in expected.items():
        assert synced[name] == pytest.approx(value, abs=1e-12), name


def test_before_any_request_every_metric_is_nan():
    metric = RerankMetrics(["exact", "greedy"], ks=(1,))
    with pytest.warns(UserWarning, match="before the ``update``"):
        out = metric.compute()
    assert set(out) == {"exact/value", "exact/gap", "exact/hit@1", "greedy/value", "greedy/gap", "greedy/hit@1"}
    assert all(torch.isnan(value) for value in out.values())
