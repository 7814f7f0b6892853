import pytest
import torch

from stcrank.errors import ConfigError
from stcrank.models.mmoe import MMoE

SIZES = {"user_id": 11, "item_id": 21, "item_category": 4, "trigger_category": 4, "item_brand": 5}


def batch(shape):
    g = torch.Generator().manual_seed(0)
    cols = {name: torch.randint(1, size, shape, generator=g) for name, size in SIZES.items()}
    cols.update({name: torch.randint(0, 40, shape, generator=g) for name in ("request_index", "hist_ipv")})
    cols["hist_same_category_views"] = torch.randint(0, 5, shape, generator=g)
    cols["item_price"] = torch.rand(shape, generator=g) * 100
    return cols


def test_heads_and_shapes_for_any_leading_shape():
    net = MMoE(SIZES, tasks=["cvr", "vtr"], embedding_dim=4, num_experts=3, expert_hidden=[8, 6], tower_hidden=[4])
    out = net(batch((5,)))
    assert set(out) == {"cvr", "vtr"} and out["cvr"].shape == (5,)
    out = net(batch((2, 7)))
    assert out["vtr"].shape == (2, 7)


def test_missing_column_is_named():
    net = MMoE(SIZES, embedding_dim=4)
    cols = batch((3,))
    del cols["item_price"]
    with pytest.raises(KeyError, match="item_price"):
        net(cols)


def test_gates_are_per_task_softmax():
    net = MMoE(SIZES, tasks=["a", "b"], embedding_dim=4, num_experts=5)
    x = net._inputs(batch((6,)))
    for task in ("a", "b"):
        gate = torch.softmax(net.gates[task](x), dim=-1)
        assert torch.allclose(gate.sum(-1), torch.ones(6))
    assert net.gates["a"] is not net.gates["b"]


def test_unknown_categorical_feature_is_an_error():
    with pytest.raises(ValueError, match="nope"):
        MMoE(SIZES, categorical=["user_id", "nope"])


@pytest.mark.parametrize(
    "setting",
    [{"embedding_dim": 0}, {"num_experts": 0}, {"expert_hidden": [0]}, {"tower_hidden": []}, {"tasks": []}],
    ids=lambda setting: next(iter(setting)),
)
def test_non_positive_sizes_are_refused_naming_the_option(setting):
    name = next(iter(setting))
    with pytest.raises(ConfigError, match=rf"^MMoE: --model\.init_args\.network\.init_args\.{name} must"):
        MMoE(SIZES, **setting)
