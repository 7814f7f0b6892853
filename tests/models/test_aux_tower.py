import torch

from stcrank.models.aux_tower import AuxiliaryTwoTower


def test_cosine_logits_and_padding():
    torch.manual_seed(0)
    tower = AuxiliaryTwoTower(embedding_dim=2, hidden=8, out=4)
    request = torch.randn(3, 16)
    behaviours = torch.randn(3, 5, 10)
    mask = torch.tensor([[True] * 5, [False, False, True, True, True], [False] * 5])
    items = torch.randn(3, 4, 16)
    logits = tower(request, behaviours, mask, items)
    assert logits.shape == (3, 4)
    assert (logits.abs() <= 1 + 1e-6).all()  # cosine
    user = tower.user_vector(request, behaviours, mask)
    assert torch.allclose(user.norm(dim=-1), torch.ones(3))
    noisy = torch.where(mask[..., None], behaviours, torch.full_like(behaviours, 99.0))
    assert torch.allclose(tower.user_vector(request, noisy, mask), user, atol=1e-6)
