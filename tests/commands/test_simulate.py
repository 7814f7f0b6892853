import errno
import json
import os
from pathlib import Path

import pytest

from stcrank.commands.simulate import load_policy_specs, simulate
from stcrank.io import OutputError

POLICIES = """
- name: cvr
  predictor: {truth: {noise: 0.5}}
  ensemble: {cvr: 1.0}
- name: cvr+vtr
  predictor: {truth: {noise: 0.5, vtr_threshold: 5.0}}
  ensemble: {cvr: 1.0, vtr: 0.05}
"""


def test_json_output_parses_and_deltas_have_standard_errors(eshop_store, capsys):
    simulate(data=str(eshop_store), policies=POLICIES, sessions=300, seed=1, format="json")
    result = json.loads(capsys.readouterr().out)
    assert result["policies"] == ["cvr", "cvr+vtr"] and result["baseline"] == "cvr"
    rows = {(r["policy"], r["metric"]): r for r in result["summary"]}
    for metric in ("purchases", "ipv", "depth", "gmv", "return_prob"):
        assert rows[("cvr", metric)]["delta"] is None
        other = rows[("cvr+vtr", metric)]
        assert other["delta_se"] is not None and other["delta_se"] >= 0
        assert other["delta"] == pytest.approx(other["mean"] - rows[("cvr", metric)]["mean"])


def test_table_output_and_file(eshop_store, tmp_path, capsys):
    file = tmp_path / "policies.yaml"
    file.write_text(POLICIES)
    simulate(data=str(eshop_store), policies=str(file), sessions=100, out=str(tmp_path / "r.json"))
    text = capsys.readouterr().out
    assert "| cvr+vtr |" in text and "Δ" in text
    assert json.loads((tmp_path / "r.json").read_text())["sessions"] == 100


def test_bad_policy_lists_are_reported(tmp_path):
    with pytest.raises(ValueError, match="non-empty list"):
        load_policy_specs("[]")
    with pytest.raises(ValueError, match="twice"):
        load_policy_specs([{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValueError, match="not found"):
        load_policy_specs(str(tmp_path / "missing.yaml"))


def test_a_full_disk_names_the_result_file_and_leaves_none_half_written(eshop_store, tmp_path, monkeypatch):
    real_write_text = Path.write_text

    def write_text(self, data, *args, **kwargs):
        real_write_text(self, data[:5], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", write_text)
    out = tmp_path / "r.json"
    with pytest.raises(OutputError, match=r"cannot write the simulation result .*r\.json: no space left"):
        simulate(data=str(eshop_store), policies=POLICIES, sessions=20, out=str(out))
    assert list(tmp_path.iterdir()) == []


def test_long_inline_policies_are_read_as_yaml_not_as_a_file_name():
    # Longer than a file name may be (255 bytes): was handed to the file system and failed with OSError.
    entries = ", ".join(f"{{name: policy_{i}, ensemble: {{cvr: 1.0, vtr: 0.{i}}}}}" for i in range(12))
    inline = f"[{entries}]"
    assert len(inline) > 255
    specs = load_policy_specs(inline)
    assert [spec["name"] for spec in specs] == [f"policy_{i}" for i in range(12)]
