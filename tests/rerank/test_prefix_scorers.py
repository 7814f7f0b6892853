import pytest
import torch

from stcrank.rerank import (
    PREFIX_SCORERS,
    BeamState,
    CategoryDiversityScorer,
    PointwisePrefixScorer,
    PrefixScorer,
    resolve_prefix_scorer,
)


def make_state():
    # one request, two beams over a frame of four candidates
    return BeamState(
        items=torch.tensor([[[0, 2], [1, 3]]]),
        score=torch.tensor([[1.0, 0.5]]),
        value=torch.tensor([[1.2, 0.7]]),
        reach=torch.tensor([[0.5, 0.25]]),
        alive=torch.tensor([[True, True]]),
    )


VALUE = torch.tensor([[4.0, 2.0, 8.0, 6.0]])
CONTINUE = torch.tensor([[0.9, 0.8, 0.7, 0.6]])


def test_pointwise_extension_scores_by_hand():
    scores = PointwisePrefixScorer().extend(make_state(), VALUE, CONTINUE, {})
    beam_0 = [1.0 + 0.5 * 4, 1.0 + 0.5 * 2, 1.0 + 0.5 * 8, 1.0 + 0.5 * 6]
    beam_1 = [0.5 + 0.25 * 4, 0.5 + 0.25 * 2, 0.5 + 0.25 * 8, 0.5 + 0.25 * 6]
    expected = torch.tensor([[beam_0, beam_1]])
    assert torch.allclose(scores, expected)
    assert PointwisePrefixScorer.supports_value_pruning


def test_default_final_score_is_the_sequence_value():
    state = make_state()
    assert torch.equal(PointwisePrefixScorer().final_score(state, VALUE, CONTINUE, {}), state.value)


def test_category_diversity_penalises_repeats_in_the_prefix():
    category = torch.tensor([[7, 7, 3, 7]])
    scorer = CategoryDiversityScorer(penalty=1.5)
    state = make_state()
    # beam 0 holds candidates 0 (cat 7) and 2 (cat 3); beam 1 holds 1 (cat 7) and 3 (cat 7)
    repeats = torch.tensor([[[1, 1, 1, 1], [2, 2, 0, 2]]])
    assert torch.equal(scorer._repeats(state.items, category), repeats)
    scores = scorer.extend(state, VALUE, CONTINUE, {"category": category})
    worth = VALUE.unsqueeze(1) - 1.5 * repeats
    expected = state.score.unsqueeze(2) + state.reach.unsqueeze(2) * worth
    assert torch.allclose(scores, expected)
    assert torch.equal(scorer.final_score(state, VALUE, CONTINUE, {}), state.score)
    assert not CategoryDiversityScorer.supports_value_pruning
    assert CategoryDiversityScorer.required_context == ("category",)


def test_category_diversity_on_empty_prefix_is_pointwise():
    state = BeamState(
        items=torch.empty(1, 1, 0, dtype=torch.long),
        score=torch.zeros(1, 1),
        value=torch.zeros(1, 1),
        reach=torch.ones(1, 1),
        alive=torch.ones(1, 1, dtype=torch.bool),
    )
    context = {"category": torch.zeros(1, 4, dtype=torch.long)}
    scores = CategoryDiversityScorer(3.0).extend(state, VALUE, CONTINUE, context)
    assert torch.equal(scores, VALUE.unsqueeze(1))


def test_penalty_must_be_non_negative():
    with pytest.raises(ValueError, match="penalty"):
        CategoryDiversityScorer(-0.1)
    with pytest.raises(ValueError, match="penalty"):
        CategoryDiversityScorer(float("nan"))


def test_resolve_by_name_and_instance():
    assert isinstance(resolve_prefix_scorer("pointwise"), PointwisePrefixScorer)
    assert isinstance(resolve_prefix_scorer("category_diversity"), CategoryDiversityScorer)
    scorer = CategoryDiversityScorer(0.3)
    assert resolve_prefix_scorer(scorer) is scorer
    assert set(PREFIX_SCORERS) == {"pointwise", "category_diversity"}
    with pytest.raises(ValueError, match=r"unknown prefix scorer 'best'.*pointwise"):
        resolve_prefix_scorer("best")
    with pytest.raises(TypeError, match="PrefixScorer"):
        resolve_prefix_scorer(3)


def test_prefix_scorer_is_abstract():
    with pytest.raises(TypeError):
        PrefixScorer()
