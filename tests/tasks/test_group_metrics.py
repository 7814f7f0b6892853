"""Tests of stcrank.tasks.group_metrics (which ids group a batch's samples)."""

from __future__ import annotations

import torch

from stcrank.tasks.group_metrics import group_ids, make_group_aucs, update_group_aucs


def test_group_ids_of_recflow_and_eshop_batches():
    recflow = {"user": torch.tensor([[3, 1, 1, 1, 1], [4, 1, 1, 1, 1]]), "request_id": torch.tensor([10, 11])}
    ids = group_ids(recflow)
    assert ids["user"].tolist() == [3, 4] and ids["request"].tolist() == [10, 11]
    eshop = {"user_id": torch.tensor([7, 8]), "user": torch.tensor([[1, 1]]), "request_id": torch.tensor([1, 2])}
    assert group_ids(eshop)["user"].tolist() == [7, 8]
    assert group_ids({"item": torch.tensor([1])}) == {}


def test_update_restricts_ids_to_the_kept_rows():
    metrics = make_group_aucs()
    batch = {"user_id": torch.tensor([1, 1, 2, 2]), "request_id": torch.tensor([5, 5, 5, 6])}
    keep = torch.tensor([True, True, False, True])
    update_group_aucs(metrics, batch, torch.tensor([0.9, 0.1, 0.4]), torch.tensor([1, 0, 1]), keep)
    user = metrics["user"].compute()
    assert user["gauc"].item() == 1.0 and int(user["groups"]) == 1 and int(user["excluded"]) == 1
    request = metrics["request"].compute()
    assert int(request["groups"]) == 1 and int(request["excluded"]) == 1
