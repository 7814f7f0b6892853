import math
import textwrap

import numpy as np
import optuna
import pytest
from optuna.samplers import NSGAIISampler, TPESampler
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import FixedTrial, TrialState

from stcrank.tuning.objectives import MultiAucObjective, SumAucObjective, TuningContext
from stcrank.tuning.predictions import read_predictions, synthetic_predictions
from stcrank.tuning.study import (
    SearchSpace,
    StudyMismatchError,
    TuneSpec,
    derive_seed,
    finished_trials,
    make_sampler,
    open_storage,
    run,
)

TASKS = ("vtr", "cvr", "sdr")


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    return str(synthetic_predictions(tmp_path_factory.mktemp("study") / "val.parquet", rows=4000, seed=2))


def _spec(predictions, objective="sum", **changes):
    fields = {
        "objective": SumAucObjective() if objective == "sum" else MultiAucObjective(),
        "space": SearchSpace(TASKS, bounds=(1e-2, 1e2)),
        "ensemble": "linear",
        "n_trials": 20,
        "predictions": predictions,
    }
    return TuneSpec(**{**fields, **changes})


def _trials(study):
    return [(t.number, t.params, t.values) for t in study.get_trials(states=(TrialState.COMPLETE,))]


def test_search_space_fixes_one_weight_and_checks_its_arguments():
    space = SearchSpace(("vtr", "cvr", "sdr"))
    assert space.fixed_task == "vtr" and space.searched == ("cvr", "sdr")
    weights = space.suggest(FixedTrial({"w_cvr": 2.5, "w_sdr": 0.01}))
    assert weights == {"vtr": 1.0, "cvr": 2.5, "sdr": 0.01} and list(weights) == ["vtr", "cvr", "sdr"]
    assert SearchSpace(("vtr", "cvr"), fixed_task="cvr").suggest(FixedTrial({"w_vtr": 3.0})) == {"vtr": 3.0, "cvr": 1.0}
    with pytest.raises(ValueError, match="at least two distinct tasks"):
        SearchSpace(("cvr",))
    with pytest.raises(ValueError, match="fixed task 'ctr' is not one of"):
        SearchSpace(("vtr", "cvr"), fixed_task="ctr")
    with pytest.raises(ValueError, match="0 < low < high"):
        SearchSpace(("vtr", "cvr"), bounds=(0.0, 10.0))


def test_storage_spellings(tmp_path):
    assert open_storage(None) is None
    journal = tmp_path / "new" / "study.log"
    assert isinstance(open_storage(str(journal)), JournalStorage) and journal.exists()
    assert isinstance(open_storage(f"sqlite:///{tmp_path / 'study.db'}"), RDBStorage)
    with pytest.raises(ValueError, match="is a folder"):
        open_storage(str(tmp_path))


def test_samplers_are_pinned_and_seeds_derived():
    assert isinstance(make_sampler("tpe", 0), TPESampler) and isinstance(make_sampler("nsga2", 0), NSGAIISampler)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("random", 0)
    assert derive_seed(7, 0, 0) == 7
    seeds = {derive_seed(7, 1, 0), derive_seed(7, 0, 5), derive_seed(7, 1, 5), derive_seed(8, 1, 0)}
    assert len(seeds) == 4 and derive_seed(7, 1, 5) == derive_seed(7, 1, 5)


def test_tuning_reaches_the_brute_force_grid_optimum(predictions):
    objective = SumAucObjective()
    objective.setup(TuningContext(tasks=TASKS, ensemble="linear", predictions=read_predictions(predictions)))
    grid = np.logspace(-2, 2, 25)
    values = [objective.evaluate({"vtr": 1.0, "cvr": a, "sdr": b})["sum_auc"] for a in grid for b in grid]
    best, worst = max(values), min(values)
    assert best - worst > 0.05  # the weights matter, so reaching the optimum is not luck
    outcome = run(_spec(predictions, n_trials=80))
    tuned = outcome.study.best_value
    assert tuned >= best - 1e-3, (tuned, best)
    assert outcome.ran == {0: 80} and finished_trials(outcome.study) == 80


def test_same_seed_same_trials_other_seed_other_trials(predictions):
    first = _trials(run(_spec(predictions, n_trials=15, seed=3)).study)
    assert first == _trials(run(_spec(predictions, n_trials=15, seed=3)).study)
    assert first != _trials(run(_spec(predictions, n_trials=15, seed=4)).study)


def test_resume_keeps_finished_trials_and_runs_the_remainder(predictions, tmp_path):
    storage = str(tmp_path / "study.log")
    first = run(_spec(predictions, n_trials=8, storage=storage, study_name="moc"))
    kept = _trials(first.study)
    again = run(_spec(predictions, n_trials=20, storage=storage, study_name="moc"))
    assert again.ran == {0: 12} and _trials(again.study)[:8] == kept and finished_trials(again.study) == 20
    assert run(_spec(predictions, n_trials=20, storage=storage, study_name="moc")).ran == {0: 0}
    # the resumed run does not replay the first run's proposals
    params = [tuple(sorted(number_params[1].items())) for number_params in _trials(again.study)]
    assert len(set(params)) == 20


def test_sqlite_storage_resumes_too(predictions, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run(_spec(predictions, n_trials=4, storage=storage, study_name="s"))
    assert finished_trials(run(_spec(predictions, n_trials=7, storage=storage, study_name="s")).study) == 7


def test_a_study_of_another_configuration_is_not_resumed(predictions, tmp_path):
    storage = str(tmp_path / "study.log")
    run(_spec(predictions, n_trials=2, storage=storage, study_name="moc"))
    with pytest.raises(StudyMismatchError, match=r"another configuration.*'bounds'"):
        run(_spec(predictions, n_trials=3, storage=storage, study_name="moc", space=SearchSpace(TASKS)))
    with pytest.raises(StudyMismatchError, match="optimises \\['maximize'\\], not"):
        run(_spec(predictions, "multi", n_trials=3, storage=storage, study_name="moc"))


def test_multi_objective_front_is_non_dominated(predictions):
    study = run(_spec(predictions, "multi", n_trials=30)).study
    assert study.metric_names == ["auc_vtr", "auc_cvr", "auc_sdr"]
    front = study.best_trials
    assert front
    for trial in front:
        for other in study.get_trials(states=(TrialState.COMPLETE,)):
            dominates = (
                all(o >= t for o, t in zip(other.values, trial.values, strict=True)) and other.values != trial.values
            )
            assert not dominates
        assert math.isclose(trial.user_attrs["metrics"]["sum_auc"], sum(trial.values))


def test_several_workers_need_a_storage(predictions):
    with pytest.raises(ValueError, match="give --storage"):
        run(_spec(predictions), workers=2)
    with pytest.raises(ValueError, match="at least 1"):
        run(_spec(predictions), workers=0)


# Each worker waits in setup until both have started, so that both really run trials of the shared study.
BARRIER_OBJECTIVE = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from stcrank.tuning.objectives import SumAucObjective

    class BarrierSumAuc(SumAucObjective):
        def __init__(self, folder: str, parties: int = 2, delay: float = 0.05) -> None:
            self.folder, self.parties, self.delay = folder, parties, delay

        def setup(self, context):
            super().setup(context)
            Path(self.folder, f"ready-{os.getpid()}").touch()
            deadline = time.monotonic() + 120
            while len(list(Path(self.folder).glob("ready-*"))) < self.parties and time.monotonic() < deadline:
                time.sleep(0.02)

        def evaluate(self, weights):
            time.sleep(self.delay)
            return super().evaluate(weights)
    """
)


@pytest.mark.slow
def test_two_worker_processes_share_one_journal_study(predictions, tmp_path, monkeypatch):
    (tmp_path / "barrier_objective.py").write_text(BARRIER_OBJECTIVE)
    monkeypatch.syspath_prepend(str(tmp_path))
    from barrier_objective import BarrierSumAuc

    storage = str(tmp_path / "shared.log")
    spec = _spec(predictions, objective="sum", n_trials=16, storage=storage, study_name="shared")
    spec = TuneSpec(**{**spec.__dict__, "objective": BarrierSumAuc(str(tmp_path))})
    outcome = run(spec, workers=2)
    finished = finished_trials(outcome.study)
    assert 16 <= finished <= 17
    assert set(outcome.ran) == {0, 1} and all(count > 0 for count in outcome.ran.values())
    assert sum(outcome.ran.values()) == finished
    numbers = [trial.number for trial in outcome.study.trials]
    assert numbers == list(range(len(numbers)))
    assert finished_trials(optuna.load_study(study_name="shared", storage=open_storage(storage))) == finished


class _NanAboveOne(SumAucObjective):
    """Fails (returns NaN) whenever the cvr weight exceeds 1."""

    def evaluate(self, weights):
        return {"sum_auc": float("nan")} if weights["cvr"] > 1 else super().evaluate(weights)


def test_failed_trials_do_not_count_and_a_run_starts_at_most_the_remainder(predictions, tmp_path):
    storage = str(tmp_path / "nan.log")
    spec = _spec(predictions, n_trials=10, storage=storage, study_name="nan", objective="sum")
    spec = TuneSpec(**{**spec.__dict__, "objective": _NanAboveOne()})
    study = run(spec).study
    failed = len(study.get_trials(states=(TrialState.FAIL,)))
    assert failed > 0 and finished_trials(study) + failed == 10
    finished = finished_trials(study)
    study = run(TuneSpec(**{**spec.__dict__, "objective": _NanAboveOne()})).study
    assert len(study.trials) == 10 + (10 - finished)  # the second run started only the remainder
