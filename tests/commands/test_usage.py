import pytest

from stcrank.commands.usage import config_files, did_you_mean, explain, locate


def test_did_you_mean_uses_the_closest_name():
    assert did_you_mean("fs_ltrr", ["bce", "fs_ltr", "bpr"]) == "; did you mean fs_ltr?"
    assert did_you_mean("zzz", ["bce"]) == ""


def test_an_unknown_class_option_names_the_option_and_the_fix():
    message = (
        'Parser key "data":\n  Does not validate against any of the Union subtypes\n  Subtypes: [...]\n  Errors:\n'
        "    - Problem with given class_path 'stcrank.data.recflow.datamodule.RecFlowDataModule':\n"
        "        Option 'batch_sise' is not accepted\n    - Expected a <class 'NoneType'>\n"
    )
    text, key = explain(message)
    assert text == "--data.batch_sise: RecFlowDataModule has no option 'batch_sise'; did you mean --data.batch_size?"
    assert key == "batch_sise"


def test_a_wrong_value_keeps_the_useful_line():
    message = (
        "Parser key \"data\":\n  Errors:\n    - Problem with given class_path 'x.Y':\n"
        '        Parser key "batch_size":\n'
        "          Expected a <class 'int'>. Got value: ten\n    - Expected a <class 'NoneType'>\n"
        "  Given value type: <class 'str'>\n  Given value: ten\n"
    )
    assert explain(message)[0] == "--data.batch_size: expected int, got ten"


def test_a_class_outside_a_plugin_group_is_named_not_the_name_alternative():
    message = (
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Problem with given class_path 'stcrank.tasks.RankingTask':\n"
        '        Parser key "loss":\n          Does not validate against any of the Union subtypes\n'
        "          Subtypes: [<class 'stcrank.plugins.Loss'>, <class 'str'>]\n          Errors:\n"
        "            - Import path torch.nn.MSELoss does not correspond to a subclass of Loss\n"
        "            - Expected a <class 'str'>\n          Given value type: <class 'dict'>\n"
        "    - Expected a <class 'NoneType'>\n"
    )
    assert explain(message)[0] == "--model.loss: Import path torch.nn.MSELoss does not correspond to a subclass of Loss"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "unrecognized arguments: --trainr.max_epochs 3",
            "unknown option --trainr.max_epochs; did you mean --trainer.max_epochs?",
        ),
        ("the following arguments are required: --data.root", "missing required option(s): --data.root"),
    ],
)
def test_parser_messages(message, expected):
    parser = type("Parser", (), {})()
    parser._actions = [type("A", (), {"option_strings": ["--trainer.max_epochs", "--trainer", "--data"]})()]
    assert explain(message, parser)[0] == expected


def test_a_key_is_located_in_the_config_files_a_command_reads(tmp_path):
    piece = tmp_path / "pieces" / "data.yaml"
    piece.parent.mkdir()
    piece.write_text("class_path: X\ninit_args:\n  batch_sise: 3\n")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text("data: pieces/data.yaml\n")
    argv = ["fit", "-c", str(experiment)]
    assert config_files(argv) == [experiment, experiment.parent / "pieces/data.yaml"]
    assert locate("batch_sise", argv) == f" (in {experiment.parent / 'pieces/data.yaml'} line 3)"
    assert locate("lrr", ["fit", "--model.lrr", "1"]) == " (on the command line)"
