import warnings

import optuna
import pytest
import yaml
from jsonargparse import ArgumentParser
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from stcrank.plugins import Ensemble
from stcrank.tuning.report import (
    choose_trial,
    ensemble_config,
    front,
    markdown_table,
    save_plot,
    trial_record,
    yaml_snippet,
)
from stcrank.tuning.study import SearchSpace

SPACE = SearchSpace(("vtr", "cvr"), bounds=(1e-3, 1e3))
DISTRIBUTIONS = {"w_cvr": FloatDistribution(1e-3, 1e3, log=True)}


def _study(directions, rows, names):
    study = optuna.create_study(directions=directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(names)
    for weight, values in rows:
        metrics = {"sum_auc": float(sum(values))}
        study.add_trial(
            create_trial(
                params={"w_cvr": weight}, distributions=DISTRIBUTIONS, values=values, user_attrs={"metrics": metrics}
            )
        )
    return study


def test_single_objective_front_is_best_first_and_chosen_is_best():
    study = _study(["maximize"], [(1.0, [1.2]), (2.0, [1.5]), (3.0, [1.4]), (4.0, [1.5])], ["sum_auc"])
    assert [trial.number for trial in front(study)] == [1, 3, 2, 0]
    assert [trial.number for trial in front(study, limit=2)] == [1, 3]
    assert choose_trial(study).number == 1
    minimising = _study(["minimize"], [(1.0, [3.0]), (2.0, [1.0])], ["loss"])
    assert choose_trial(minimising).number == 1


def test_multi_objective_choice_is_the_largest_normalised_sum():
    # front: A (0.9, 10), B (0.5, 2), C (0.2, 1); D (0.4, 3) is dominated by B.
    # normalised sums: A = 1 + 0, B = 0.3/0.7 + (1 - 1/9) = 1.317, C = 0 + 1  ->  B
    study = _study(
        ["maximize", "minimize"],
        [(1.0, [0.9, 10.0]), (2.0, [0.5, 2.0]), (3.0, [0.2, 1.0]), (4.0, [0.4, 3.0])],
        ["auc", "loss"],
    )
    assert [trial.number for trial in front(study)] == [1, 0, 2]  # A and C tie: the earlier trial first
    assert choose_trial(study).number == 1


def test_no_finished_trial_is_an_error():
    with pytest.raises(ValueError, match="no finished trial"):
        choose_trial(optuna.create_study(study_name="empty"))


def test_records_and_markdown_table():
    study = _study(["maximize", "maximize"], [(0.5, [0.7, 0.6]), (2.0, [0.6, 0.65])], ["auc_vtr", "auc_cvr"])
    records = [trial_record(trial, SPACE, study.metric_names) for trial in front(study)]
    assert records[0] == {
        "trial": 0,
        "weights": {"vtr": 1.0, "cvr": 0.5},
        "values": {"auc_vtr": 0.7, "auc_cvr": 0.6},
        "metrics": {"sum_auc": pytest.approx(1.3)},
    }
    table = markdown_table(records, chosen=1).splitlines()
    assert table[0] == "| trial | w_vtr | w_cvr | auc_vtr | auc_cvr | sum_auc |"
    assert table[1] == "|---:|---:|---:|---:|---:|---:|"
    assert table[3] == "| 1* | 1 | 2 | 0.6 | 0.65 | 1.25 |"
    assert len(table) == 4 and markdown_table([]) == "(no finished trial)"


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_plot_is_a_png_for_any_number_of_objectives(tmp_path, count):
    names = [f"o{index}" for index in range(count)]
    rows = [(float(weight), [float((weight * (index + 3)) % 7) for index in range(count)]) for weight in range(1, 9)]
    path = save_plot(_study(["maximize"] * count, rows, names), tmp_path / "plots" / "front.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.mark.parametrize(
    ("name", "class_name"), [("linear", "LinearEnsemble"), ("multiplicative", "MultiplicativeEnsemble")]
)
def test_yaml_snippet_parses_and_builds_the_ensemble(name, class_name):
    weights = {"vtr": 1.0, "cvr": 3.141592653589793, "sdr": 0.001}
    snippet = yaml_snippet(name, weights)
    loaded = yaml.safe_load(snippet)
    assert loaded["ensemble"]["init_args"]["weights"] == weights
    assert loaded["ensemble"]["class_path"].endswith(class_name)
    assert list(loaded["ensemble"]["init_args"]["weights"]) == ["vtr", "cvr", "sdr"]
    # the snippet is a valid value for a config key `ensemble: Ensemble | str`
    parser = ArgumentParser()
    parser.add_argument("--ensemble", type=Ensemble | str)
    built = parser.instantiate(parser.parse_string(snippet)).ensemble
    assert type(built).__name__ == class_name and built.weights == weights
    assert ensemble_config(name, weights) == loaded["ensemble"]
