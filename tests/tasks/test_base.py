import pytest

from stcrank.errors import ConfigError
from stcrank.models.din import DIN
from stcrank.models.features import CONTEXT_FEATURES, ITEM_FEATURES, USER_FEATURES
from stcrank.tasks.base import step_seed
from stcrank.tasks.ranking import RankingTask

SIZES = dict.fromkeys(CONTEXT_FEATURES + USER_FEATURES + ITEM_FEATURES, 20)


def _task(embedding_dim: int = 8, sizes: dict[str, int] = SIZES, **din: object) -> RankingTask:
    return RankingTask(lambda fs: DIN(fs, embedding_dim=embedding_dim, **din), feature_sizes=sizes)


def test_a_checkpoint_of_the_same_network_loads():
    checkpoint = {"state_dict": _task().state_dict()}
    task = _task()
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"])


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (lambda: _task(embedding_dim=16), r"network\.embeddings\.tables\.\w+\.weight is \[20, 8\] in the checkpoint"),
        (
            lambda: _task(sizes={**SIZES, "video_id": 30}),
            r"video_id\.weight is \[20, 8\] in the checkpoint but \[30, 8\]",
        ),
        (lambda: _task(auxiliary_tower=True), r"the checkpoint lacks \d+ weights of this network"),
    ],
    ids=["embedding_dim", "vocabulary", "extra-tower"],
)
def test_a_checkpoint_of_another_network_is_refused_naming_the_weights(other, message):
    checkpoint = {"state_dict": _task().state_dict()}
    with pytest.raises(ConfigError, match=message) as error:
        other().on_load_checkpoint(checkpoint)
    assert "--model.init_args.network.init_args" in str(error.value)


def test_step_seed_depends_on_every_part():
    seeds = {step_seed(0, 0, 0, 0), step_seed(1, 0, 0, 0), step_seed(0, 1, 0, 0), step_seed(0, 0, 1, 0)}
    assert len(seeds | {step_seed(0, 0, 0, 1)}) == 5
    assert step_seed(3, 1, 2, 5) == step_seed(3, 1, 2, 5)


@pytest.mark.parametrize(
    ("setting", "option"),
    [({"ks": [10, 0]}, "ks"), ({"ks": []}, "ks"), ({"lr": 0.0}, "lr"), ({"lr": -1e-3}, "lr")],
    ids=["ks-zero", "ks-empty", "lr-zero", "lr-negative"],
)
def test_ranking_task_refuses_meaningless_settings_naming_the_option(setting, option):
    with pytest.raises(ConfigError, match=rf"^RankingTask: --model\.init_args\.{option} must"):
        RankingTask(lambda fs: DIN(fs), feature_sizes=SIZES, **setting)
