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


def _request_columns(rows, candidates, layout):
    # Simulator layout: request-level columns (user, trigger, request number, session views) once per request,
    # expanded over the candidates ("expanded") or given as [R, 1] ("broadcast"); the rest per candidate. The
    # layout "across_requests" gives those columns as [1, n] instead: one shape that is not per request.
    cols = batch((rows, candidates))
    for name in ("user_id", "trigger_category", "request_index", "hist_ipv"):
        column = cols[name][:1, :] if layout == "across_requests" else cols[name][:, :1]
        cols[name] = column.expand(rows, candidates) if layout == "expanded" else column
    return cols


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["expanded", "broadcast", "across_requests"])
def test_request_level_share_equals_the_whole_input_reference(reference_networks, layout, dtype):
    torch.manual_seed(0)
    net = MMoE(SIZES, tasks=["cvr", "vtr"], embedding_dim=4, num_experts=3, expert_hidden=[8, 6], tower_hidden=[4])
    net = reference_networks.perturbed(net, dtype)
    net.input_norm.weight.data.uniform_(0.5, 1.5)  # a layer norm scale away from 0, as trained ones are
    cols = _request_columns(4, 7, layout)
    got = net(cols)
    want = reference_networks.mmoe_logits(net, cols)
    tolerance = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    for task in ("cvr", "vtr"):
        assert got[task].shape == (4, 7)
        torch.testing.assert_close(got[task], want[task], **tolerance)
    net.zero_grad()
    sum(got.values()).sum().backward()
    got = reference_networks.grads(net)
    net.zero_grad()
    sum(want.values()).sum().backward()
    want = reference_networks.grads(net)
    for name in want:
        torch.testing.assert_close(got[name], want[name], **tolerance, msg=name)


def test_one_shape_batches_equal_the_reference_exactly(reference_networks):
    torch.manual_seed(0)
    net = MMoE(SIZES, tasks=["cvr", "vtr"], embedding_dim=4, num_experts=3)
    cols = batch((9,))
    got, want = net(cols), reference_networks.mmoe_logits(net, cols)
    for task in ("cvr", "vtr"):
        torch.testing.assert_close(got[task], want[task], atol=1e-6, rtol=1e-6)


REQUEST_COLUMNS = ("request_index", "hist_ipv")


def test_real_page_views_scored_per_request_like_the_reference(eshop_store, reference_networks):
    # A real batch of the e-shop data module, and the simulator's layout built from it: the request-level columns
    # of 6 page views expanded over 9 candidates taken from other page views.
    from stcrank.data.eshop.datamodule import EShopDataModule

    data = EShopDataModule(str(eshop_store), labels={"cvr": "cvr"}, batch_size=64)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    torch.manual_seed(0)
    net = reference_networks.perturbed(MMoE(data.feature_sizes, tasks=["cvr", "vtr", "sdr"]), torch.float64)
    net.input_norm.weight.data.uniform_(0.5, 1.5)
    columns = {name: batch[name] for name in net.input_columns}
    got, want = net(columns), reference_networks.mmoe_logits(net, columns)
    for task in net.tasks:
        torch.testing.assert_close(got[task], want[task], atol=1e-10, rtol=1e-10)
    requests, candidates = torch.arange(6), torch.arange(6, 60).view(6, 9)
    grid = {}
    for name, values in columns.items():
        if name.startswith(("user_", "trigger_")) or name in REQUEST_COLUMNS:
            grid[name] = values[requests][:, None].expand(6, 9)  # stride 0 over the candidates
        else:
            grid[name] = values[candidates]
    got, want = net(grid), reference_networks.mmoe_logits(net, grid)
    for task in net.tasks:
        assert got[task].shape == (6, 9)
        torch.testing.assert_close(got[task], want[task], atol=1e-10, rtol=1e-10)
