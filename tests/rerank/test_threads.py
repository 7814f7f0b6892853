import pytest
import torch

from stcrank.rerank import PointwisePrefixScorer
from stcrank.rerank.threads import RERANK_THREADS, intra_op_threads
from stcrank_plugins.rerankers.beam_search import BeamSearchReranker
from stcrank_plugins.rerankers.exact import ExactReranker
from stcrank_plugins.rerankers.greedy import GreedyReranker


@pytest.fixture
def process_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield 2
    torch.set_num_threads(previous)


def test_the_block_runs_with_the_threads_and_the_setting_comes_back(process_threads):
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == process_threads
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("fails inside")
    assert torch.get_num_threads() == process_threads  # restored on errors too
    with intra_op_threads(None):
        assert torch.get_num_threads() == process_threads
    with pytest.raises(ValueError, match="threads"), intra_op_threads(0):
        pass


class _RecordingScorer(PointwisePrefixScorer):
    def __init__(self):
        self.threads = []

    def extend(self, state, value, continue_prob, context):
        self.threads.append(torch.get_num_threads())
        return super().extend(state, value, continue_prob, context)


def test_rerankers_run_on_one_thread_by_default_and_return_the_same_lists(process_threads):
    scorer = _RecordingScorer()
    BeamSearchReranker(beam_size=3, prefix_scorer=scorer)(torch.rand(4, 12), torch.rand(4, 12), 3)
    assert set(scorer.threads) == {RERANK_THREADS} == {1}
    assert torch.get_num_threads() == process_threads
    scorer = _RecordingScorer()
    BeamSearchReranker(beam_size=3, prefix_scorer=scorer, threads=None)(torch.rand(4, 12), torch.rand(4, 12), 3)
    assert set(scorer.threads) == {process_threads}
    generator = torch.Generator().manual_seed(0)
    value, continue_prob = torch.rand(64, 200, generator=generator), torch.rand(64, 200, generator=generator)
    for make in (GreedyReranker, ExactReranker, BeamSearchReranker):
        lists = [make(threads=threads)(value, continue_prob, 10) for threads in (1, 2, None)]
        assert all(torch.equal(lists[0], other) for other in lists[1:]), make.__name__
        assert torch.get_num_threads() == process_threads
        with pytest.raises(ValueError, match="threads"):
            make(threads=0)
