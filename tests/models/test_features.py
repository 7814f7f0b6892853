import pytest
import torch

from stcrank.models.features import CONTEXT_FEATURES, ITEM_FEATURES, USER_FEATURES, RecFlowEmbeddings

SIZES = {name: 7 for name in dict.fromkeys(CONTEXT_FEATURES + USER_FEATURES + ITEM_FEATURES)}


def test_lookup_shapes_and_padding_row():
    embeddings = RecFlowEmbeddings(SIZES, embedding_dim=4)
    ids = torch.randint(0, 7, (3, 2, len(ITEM_FEATURES)))
    out = embeddings.item(ids)
    assert out.shape == (3, 2, len(ITEM_FEATURES), 4)
    assert torch.equal(embeddings.user(torch.zeros(2, len(USER_FEATURES), dtype=torch.long)), torch.zeros(2, 5, 4))


@pytest.mark.parametrize("bad", [7, 10**9, -1])
def test_an_id_outside_its_table_names_the_feature(bad):
    embeddings = RecFlowEmbeddings(SIZES, embedding_dim=4)
    ids = torch.ones(4, len(ITEM_FEATURES), dtype=torch.long)
    ids[2, ITEM_FEATURES.index("author_id")] = bad
    with pytest.raises(ValueError, match=r"feature 'author_id': ids in .* table has 7 rows"):
        embeddings.item(ids)


def test_missing_feature_size_is_named():
    sizes = dict(SIZES)
    del sizes["province"]
    with pytest.raises(KeyError, match="province"):
        RecFlowEmbeddings(sizes)
