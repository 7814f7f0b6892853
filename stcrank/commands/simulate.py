"""``stcrank simulate``: serve ranking policies in the e-shop simulator with common random numbers.

Policies are a YAML list (a file, or inline on the command line), each entry a name plus a policy spec
(:func:`stcrank.simulation.model_policy.build_policy`)::

    - name: truth-noisy
      predictor: {truth: {noise: 0.5, vtr_threshold: 5.0, sdr_label: filtered}}
      ensemble: {cvr: 1.0, vtr: 0.05}
    - name: moc-1
      predictor: {config: configs/experiments/stcrank/moc_1.yaml, checkpoint: runs/moc_1/last.ckpt}
      ensemble: {cvr: 1.0, vtr: 0.05}
      reranker: greedy

Every policy is served on the same sessions (same starts, retrieval and per-depth uniforms), and each metric is
reported with its standard error and the paired difference to the first policy with the SE of that difference.
With ``--stage explore`` whole homepage visits are simulated and each entry may add an ``e_policy``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import CLI

from stcrank.commands.usage import ArgumentParser
from stcrank.errors import ConfigError, StcrankError
from stcrank.io import atomic_path
from stcrank.simulation.evaluation import Evaluation, evaluate_explore, evaluate_focus

REPORTED: tuple[str, ...] = ("purchases", "ipv", "depth", "gmv", "return_prob", "expected_purchases", "expected_ipv")
"""Metrics shown in the table (the JSON holds every metric)."""


def load_policy_specs(policies: str | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Read policy specs from a YAML file, a YAML string, or a list of mappings.

    Args:
        policies: A path to a YAML file holding a list (or ``{"policies": [...]}``), inline YAML, or the list.

    Returns:
        The specs, each with a unique ``name``.

    Raises:
        ValueError: If the list is empty, an entry is not a mapping, lacks a name or repeats one.
    """
    source = "policies"
    if isinstance(policies, str):
        path = Path(policies)
        inline = "\n" in policies or policies.lstrip().startswith(("[", "{", "-"))  # YAML text, not a file name
        if not inline and (path.suffix in (".yaml", ".yml", ".json") or path.is_file()):
            if not path.is_file():
                raise ValueError(f"{path}: policies file not found")
            source, policies = str(path), yaml.safe_load(path.read_text())
        else:
            policies = yaml.safe_load(policies)
    if isinstance(policies, Mapping):
        policies = policies.get("policies")
    if not isinstance(policies, Sequence) or isinstance(policies, str) or not policies:
        raise ValueError(f"{source}: expected a non-empty list of policies")
    specs, seen = [], set()
    for index, entry in enumerate(policies):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ValueError(f"{source}: entry {index} must be a mapping with a string 'name'")
        if entry["name"] in seen:
            raise ValueError(f"{source}: policy name {entry['name']!r} is used twice")
        seen.add(entry["name"])
        specs.append(dict(entry))
    return specs


def evaluate_specs(
    data: str | Path,
    specs: Sequence[Mapping[str, Any]],
    *,
    sessions: int = 20000,
    seed: int = 0,
    stage: Literal["focus", "explore"] = "focus",
) -> Evaluation:
    """Build the policies of ``specs`` and serve them in the world the logs of ``data`` were simulated in.

    Args:
        data: Log directory written by ``stcrank data synth-eshop`` (its manifest rebuilds the world and configs).
        specs: Policy specs (see :func:`load_policy_specs`).
        sessions: F sessions (``focus``) or homepage visits (``explore``) per policy.
        seed: Seed of the sessions and every draw (common random numbers).
        stage: ``focus`` serves F sessions from sampled triggers; ``explore`` serves whole homepage visits.

    Returns:
        The evaluation.
    """
    from stcrank.data.eshop.reader import read_manifest
    from stcrank.data.eshop.synth import explore_config_of, load_world
    from stcrank.simulation.model_policy import build_e_policy, build_policy

    manifest = read_manifest(data)
    world, explore_config = load_world(manifest), explore_config_of(manifest)
    if stage == "focus":
        policies = {spec["name"]: build_policy(spec, data, seed) for spec in specs}
        return evaluate_focus(world, policies, sessions=sessions, seed=seed, config=explore_config.focus)
    if stage != "explore":
        raise ValueError(f"stage must be 'focus' or 'explore', got {stage!r}")
    arms = {
        spec["name"]: (build_e_policy(spec.get("e_policy"), seed, data), build_policy(spec, data, seed))
        for spec in specs
    }
    return evaluate_explore(world, arms, visits=sessions, seed=seed, config=explore_config)


def format_table(evaluation: Evaluation, metrics: Sequence[str] = REPORTED) -> str:
    """Markdown table: per policy, mean ± SE of each metric and the paired delta ± SE vs the first policy."""
    baseline = evaluation.policies[0]
    rows = {(r.policy, r.metric): r for r in evaluation.summary(baseline)}
    metrics = [m for m in metrics if (baseline, m) in rows]
    lines = ["| policy | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for policy in evaluation.policies:
        cells = []
        for metric in metrics:
            r = rows[(policy, metric)]
            cell = f"{r.mean:.4g} ± {r.se:.2g}"
            if r.delta is not None:
                cell += f" (Δ {r.delta:+.4g} ± {r.delta_se:.2g}; {100 * r.relative:+.2f}%)"
            cells.append(cell)
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def simulate(
    *,
    data: str,
    policies: str,
    sessions: int = 20000,
    seed: int = 0,
    stage: Literal["focus", "explore"] = "focus",
    format: Literal["table", "json"] = "table",
    out: str | None = None,
) -> dict[str, Any]:
    """Serve ranking policies in the simulator and compare them with paired standard errors.

    Args:
        data: Log directory written by ``stcrank data synth-eshop`` (the world is rebuilt from its manifest).
        policies: YAML file (or inline YAML) with the list of policies; the first is the baseline of the deltas.
        sessions: Sessions (or homepage visits) per policy; effects of a few percent need about 20000.
        seed: Seed of the sessions and every draw (the same for every policy).
        stage: ``focus`` (F sessions from sampled triggers) or ``explore`` (homepage visits, E + F).
        format: Print a Markdown ``table`` or the ``json`` result.
        out: Also write the JSON result to this file.

    Returns:
        The JSON-ready result: ``sessions``, ``policies``, ``baseline``, ``summary`` rows (policy, metric, mean,
        se, delta, delta_se, relative, relative_se, z) and ``depth_at_purchase``.
    """
    specs = load_policy_specs(policies)
    evaluation = evaluate_specs(data, specs, sessions=sessions, seed=seed, stage=stage)
    result = evaluation.to_dict(baseline=evaluation.policies[0])
    result["stage"] = stage
    result["seed"] = seed
    if out is not None:
        with atomic_path(out, "the simulation result") as temporary:  # whole or not at all; a full disk names it
            temporary.write_text(json.dumps(result, indent=2))
    if format == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"{evaluation.sessions} {stage} sessions per policy, seed {seed}; deltas vs {evaluation.policies[0]!r}\n")
        print(format_table(evaluation))
    return result


def main(argv: list[str]) -> None:
    """Run ``stcrank simulate`` with the given arguments (without the program and command names)."""
    try:
        CLI(simulate, args=argv, prog="stcrank simulate", parser_class=ArgumentParser)
    except (ValueError, KeyError, FileNotFoundError) as error:
        if isinstance(error, StcrankError):
            raise
        raise ConfigError(str(error).strip("'\"")) from error


if __name__ == "__main__":
    main(sys.argv[1:])
