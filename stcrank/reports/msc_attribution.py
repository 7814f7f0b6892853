"""Why a look-ahead re-ranker does or does not raise purchases: the method or what it is fed.

MSC-1 re-ranks the F-stage list to maximise ``V = sum_i p_i v_i``, ``p_i = prod_{j<i} s_j``. In the simulator
the expected purchases of one page are exactly that sum when ``v`` is the purchase probability ``cvr`` and
``s`` the probability of swiping on, ``1 - exit`` (``sdr`` in :class:`~stcrank.simulation.truth.FocusTruth`),
up to the history effects the list model ignores (the same-category view count moves ``cvr``, and later pages
follow). The served MSC-1 feeds it something else: ``v`` = an ensemble whose weights were tuned for summed AUCs,
``s`` = the conflict-filtered ``sdr`` prediction (the eq. 6 target ``sdr / (sdr + (1 - cvr) e0)``, not the
continuation probability). This module separates the two:

* :class:`FeedPredictor` serves the trained model's predictions (``cvr``, ``vtr``, ``sdr``) *and* the truth
  (``true_cvr``, ``true_vtr``, ``true_sdr_filtered``, ``true_continue``), so one policy can take its value from
  one source and its continuation probability from the other;
* :class:`ShiftedContinue` wraps a re-ranker and mis-calibrates its continuation probability on the logit
  scale (``logit s' = slope * logit s + shift``);
* :func:`default_arms` lists the arms and :func:`attribution_policies` builds them (point-wise, beam search,
  exact, for each feed);
* :func:`record_feeds` + :func:`calibration` compare the served ``sdr`` prediction with the true continuation
  probability on simulated first requests;
* :func:`run_attribution` runs everything on a report's logs with common random numbers, :func:`main` from the
  command line (``python -m stcrank.reports.msc_attribution``), :func:`attribution_markdown` renders it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stcrank.simulation.policies import FPolicy, FPredictor, TruthPredictor, ValuePolicy, WeightedSum
from stcrank.simulation.requests import FRequest

Reranker = Callable[[Tensor, Tensor, int], Tensor]


class FeedPredictor(FPredictor):
    """A trained model's predictions next to the truth (with optional persistent logit noise).

    Keys: the model's own (``cvr``, ``vtr``, ``sdr``, ...; when no model is given, ``cvr``, ``vtr`` and ``sdr`` are
    the truth with ``sdr`` = the eq. 6 target, as a perfect MOC-3 model would predict), plus ``true_cvr``,
    ``true_vtr``, ``true_sdr_filtered`` (the eq. 6 target) and ``true_continue`` (``1 - P(exit)``).

    Args:
        model: Predictor of the trained model, or None.
        noise: Logit noise of the truth keys (0: exact).
        vtr_threshold: Threshold (seconds) of ``true_vtr``.
        seed: Seed of the noise.
        independent_continue: Draw the noise of ``true_continue`` independently of ``true_sdr_filtered``'s
            (by default they share it, as one ``sdr`` head would).
    """

    def __init__(
        self,
        model: FPredictor | None = None,
        *,
        noise: float = 0.0,
        vtr_threshold: float = 5.0,
        seed: int = 0,
        independent_continue: bool = False,
    ) -> None:
        self.model = model
        self.filtered = TruthPredictor(noise=noise, vtr_threshold=vtr_threshold, sdr_label="filtered", seed=seed)
        continue_seed = seed + 1_000_003 if independent_continue else seed
        self.continuing = TruthPredictor(noise=noise, vtr_threshold=vtr_threshold, sdr_label="all", seed=continue_seed)

    def predict(self, request: FRequest) -> dict[str, Tensor]:
        """Return the model's predictions (or the truth's) and the ``true_*`` keys, each ``[R, n]``."""
        filtered = self.filtered.predict(request)
        truth = {
            "true_cvr": filtered["cvr"],
            "true_vtr": filtered["vtr"],
            "true_sdr_filtered": filtered["sdr"],
            "true_continue": self.continuing.predict(request)["sdr"],
        }
        own = self.model.predict(request) if self.model is not None else dict(filtered)
        return {**own, **truth}


class ShiftedContinue:
    """A re-ranker fed a mis-calibrated continuation probability: ``logit s' = slope * logit s + shift``.

    Args:
        reranker: The re-ranker (``(value, continue_prob, k) -> [R, k]``).
        shift: Added on the logit scale (> 0 over-states continuation).
        slope: Multiplies the logit (< 1 flattens the predictions towards 0.5).
    """

    def __init__(self, reranker: Reranker, shift: float = 0.0, slope: float = 1.0) -> None:
        self.reranker = reranker
        self.shift = shift
        self.slope = slope

    def __call__(self, value: Tensor, continue_prob: Tensor, k: int) -> Tensor:
        """Re-rank with the transformed continuation probability."""
        p = continue_prob.double().clamp(1e-6, 1 - 1e-6)
        shifted = torch.sigmoid(self.slope * torch.logit(p) + self.shift).to(continue_prob.dtype)
        return self.reranker(value, shifted, k)


def attribution_policies(
    predictor: FPredictor,
    arms: Mapping[str, Mapping[str, Any]],
    rerankers: Mapping[str, Reranker | None],
) -> dict[str, FPolicy]:
    """Policies from arm specs ``{"value": {key: weight}, "continue": key, "reranker": name, "shift", "slope"}``.

    An arm may also name its ``baseline`` arm, or a list of them (used by :func:`run_attribution`).

    Args:
        predictor: A :class:`FeedPredictor` (or any predictor holding the keys the arms name).
        arms: Arm name -> spec; ``reranker`` names an entry of ``rerankers`` (None or missing: point-wise).
        rerankers: Name -> re-ranker.

    Returns:
        Name -> :class:`~stcrank.simulation.policies.ValuePolicy`.

    Raises:
        ValueError: If an arm names an unknown re-ranker or has no value weights.
    """
    out: dict[str, FPolicy] = {}
    for name, arm in arms.items():
        weights = dict(arm.get("value") or {})
        if not weights:
            raise ValueError(f"arm {name!r}: needs 'value' weights, e.g. {{'true_cvr': 1.0}}")
        reranker_name = arm.get("reranker")
        if reranker_name is not None and reranker_name not in rerankers:
            raise ValueError(f"arm {name!r}: unknown re-ranker {reranker_name!r}; known {sorted(rerankers)}")
        reranker = rerankers[reranker_name] if reranker_name is not None else None
        if reranker is not None and (arm.get("shift", 0.0) or arm.get("slope", 1.0) != 1.0):
            reranker = ShiftedContinue(reranker, float(arm.get("shift", 0.0)), float(arm.get("slope", 1.0)))
        out[name] = ValuePolicy(
            predictor,
            WeightedSum({k: float(w) for k, w in weights.items()}),
            reranker,
            continue_task=str(arm.get("continue", "true_continue")),
        )
    return out


def _logit(p: Tensor) -> Tensor:
    return torch.logit(p.double().clamp(1e-6, 1 - 1e-6))


def calibration(predicted: Tensor, truth: Tensor) -> dict[str, float]:
    """How well ``predicted`` (a continuation probability) matches ``truth``, over all candidates.

    Args:
        predicted: Predicted probabilities (any shape).
        truth: True probabilities (same shape).

    Returns:
        ``mean_pred``, ``mean_true``, ``slope`` (least squares of truth on prediction; 1 when calibrated),
        ``logit_slope`` and ``logit_intercept`` (least squares of ``logit truth`` on ``logit prediction``),
        ``corr`` (Pearson, probability scale) and ``mean_exit_ratio`` (mean ``(1 - truth) / (1 - prediction)``:
        how many times the true exit probability is the predicted one; the re-rankers order by the ratio
        ``v / (1 - s)``).

    Raises:
        ValueError: On a shape mismatch or fewer than two values.
    """
    if predicted.shape != truth.shape or predicted.numel() < 2:
        raise ValueError(f"need two equal shapes with >= 2 values; got {tuple(predicted.shape)}, {tuple(truth.shape)}")
    x, y = predicted.double().flatten(), truth.double().flatten()
    xc, yc = x - x.mean(), y - y.mean()
    lx, ly = _logit(x), _logit(y)
    lxc = lx - lx.mean()
    logit_slope = float((lxc * (ly - ly.mean())).sum() / (lxc * lxc).sum())
    return {
        "mean_pred": float(x.mean()),
        "mean_true": float(y.mean()),
        "slope": float((xc * yc).sum() / (xc * xc).sum()),
        "logit_slope": logit_slope,
        "logit_intercept": float(ly.mean() - logit_slope * lx.mean()),
        "corr": float((xc * yc).sum() / math.sqrt(float((xc * xc).sum() * (yc * yc).sum()))),
        "mean_exit_ratio": float(((1 - y) / (1 - x).clamp_min(1e-6)).mean()),
    }


class _Recorder(FPolicy):
    """Serves point-wise by a value and keeps chosen predictions of every first request."""

    def __init__(self, predictor: FPredictor, value: Mapping[str, float], keys: Sequence[str]) -> None:
        self.predictor, self.value, self.keys = predictor, WeightedSum(dict(value)), list(keys)
        self.records: dict[str, list[Tensor]] = {key: [] for key in self.keys}

    def rank(self, request: FRequest, k: int) -> Tensor:
        predictions = self.predictor.predict(request)
        if request.request_index == 0:
            for key in self.keys:
                self.records[key].append(predictions[key].detach().double())
        return torch.topk(self.value(predictions), k, dim=1).indices


def record_feeds(
    world: Any,
    predictor: FPredictor,
    keys: Sequence[str],
    *,
    sessions: int,
    seed: int,
    config: Any,
    value: Mapping[str, float] | None = None,
) -> dict[str, Tensor]:
    """The predictions ``keys`` of every candidate of simulated first F requests.

    Args:
        world: The simulator world.
        predictor: The predictor whose keys are recorded.
        keys: Prediction names to keep.
        sessions: F sessions (one first request each).
        seed: Seed of the session starts.
        config: F-stage config (candidates ``n``, page size).
        value: Weights of the point-wise value that serves the sessions (default ``true_cvr``).

    Returns:
        ``{key: [sessions, n]}`` float64.
    """
    from stcrank.simulation.explore import sample_focus_starts
    from stcrank.simulation.focus import simulate_focus

    recorder = _Recorder(predictor, value or {"true_cvr": 1.0}, keys)
    starts = sample_focus_starts(world, sessions, seed=seed)
    simulate_focus(world, recorder, starts, config=config, seed=seed)
    return {key: torch.cat(parts) for key, parts in recorder.records.items()}


def default_arms(weights: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """The arms of the attribution: the truth block (a, b), the model block and mis-scaled continuation (c).

    Args:
        weights: The served ensemble's weights (``cvr``, ``vtr``, ``sdr``), e.g. MOC-3's tuned weights.

    Returns:
        Arm name -> spec for :func:`attribution_policies` (``model:`` arms need a model in the predictor).
    """
    true_ens = {f"true_{k}" if k != "sdr" else "true_sdr_filtered": float(w) for k, w in weights.items()}
    model_ens = {k: float(w) for k, w in weights.items()}
    cvr = {"true_cvr": 1.0}
    no_sdr = {k: w for k, w in true_ens.items() if k != "true_sdr_filtered"}
    arms: dict[str, dict[str, Any]] = {
        # (a) fed the purchase probability and the true continuation
        "truth:cvr|greedy": {"value": cvr},
        "truth:cvr|beam": {
            "value": cvr,
            "continue": "true_continue",
            "reranker": "beam",
            "baseline": "truth:cvr|greedy",
        },
        "truth:cvr|exact": {
            "value": cvr,
            "continue": "true_continue",
            "reranker": "exact",
            "baseline": "truth:cvr|greedy",
        },
        # (b) fed what MSC-1 is fed, but predicted perfectly
        "truth:ens|greedy": {"value": true_ens, "baseline": "truth:cvr|greedy"},
        "truth:ens,filtered|beam": {
            "value": true_ens,
            "continue": "true_sdr_filtered",
            "reranker": "beam",
            "baseline": "truth:ens|greedy",
        },
        "truth:ens,filtered|exact": {
            "value": true_ens,
            "continue": "true_sdr_filtered",
            "reranker": "exact",
            "baseline": ["truth:ens|greedy", "truth:cvr|greedy"],
        },
        "truth:ens,continue|exact": {
            "value": true_ens,
            "continue": "true_continue",
            "reranker": "exact",
            "baseline": "truth:ens|greedy",
        },
        "truth:cvr,filtered|exact": {
            "value": cvr,
            "continue": "true_sdr_filtered",
            "reranker": "exact",
            "baseline": "truth:cvr|greedy",
        },
        # the ensemble without its sdr term: does the value share the continuation's errors, or is it the value?
        "truth:ens-no-sdr|greedy": {"value": no_sdr},
        "truth:ens-no-sdr,continue|beam": {
            "value": no_sdr,
            "continue": "true_continue",
            "reranker": "beam",
            "baseline": "truth:ens-no-sdr|greedy",
        },
        "truth:ens-no-sdr,continue|exact": {
            "value": no_sdr,
            "continue": "true_continue",
            "reranker": "exact",
            "baseline": "truth:ens-no-sdr|greedy",
        },
        # (c) mis-scaled true continuation
        "truth:cvr,shift+1|exact": {
            "value": cvr,
            "continue": "true_continue",
            "reranker": "exact",
            "shift": 1.0,
            "baseline": "truth:cvr|greedy",
        },
        "truth:cvr,shift-1|exact": {
            "value": cvr,
            "continue": "true_continue",
            "reranker": "exact",
            "shift": -1.0,
            "baseline": "truth:cvr|greedy",
        },
        # the trained model (MOC-3 = greedy, MSC-1 = beam, MSC-1-exact = exact), then one input swapped for the truth
        "model:ens|greedy": {"value": model_ens},
        "model:ens,sdr|beam": {
            "value": model_ens,
            "continue": "sdr",
            "reranker": "beam",
            "baseline": "model:ens|greedy",
        },
        "model:ens,sdr|exact": {
            "value": model_ens,
            "continue": "sdr",
            "reranker": "exact",
            "baseline": "model:ens|greedy",
        },
        "model:ens,true_continue|exact": {
            "value": model_ens,
            "continue": "true_continue",
            "reranker": "exact",
            "baseline": "model:ens|greedy",
        },
        # the model's own purchase prediction as the value
        "model:cvr|greedy": {"value": {"cvr": 1.0}, "baseline": "model:ens|greedy"},
        "model:cvr,sdr|beam": {
            "value": {"cvr": 1.0},
            "continue": "sdr",
            "reranker": "beam",
            "baseline": ["model:cvr|greedy", "model:ens|greedy"],
        },
        "model:cvr,sdr|exact": {
            "value": {"cvr": 1.0},
            "continue": "sdr",
            "reranker": "exact",
            "baseline": ["model:cvr|greedy", "model:ens|greedy"],
        },
        # the served sdr prediction re-calibrated (logit-linear fit to the true continuation, on other requests)
        "model:ens,sdr recalibrated|exact": {
            "value": model_ens,
            "continue": "sdr",
            "reranker": "exact",
            "recalibrate": True,
            "baseline": "model:ens|greedy",
        },
        "model:ens,sdr recalibrated|beam": {
            "value": model_ens,
            "continue": "sdr",
            "reranker": "beam",
            "recalibrate": True,
            "baseline": "model:ens|greedy",
        },
    }
    return arms


def run_attribution(
    data: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: str | Path | None = None,
    weights: Mapping[str, float] | None = None,
    arms: Mapping[str, Mapping[str, Any]] | None = None,
    sessions: int = 12000,
    seed: int = 0,
    noise: float = 0.0,
    calibration_requests: int = 1000,
    beam_size: int = 25,
    independent_continue: bool = False,
) -> dict[str, Any]:
    """Serve the attribution arms on a report's logs (its world and F config) with common random numbers.

    Args:
        data: Log directory of the report (``manifest.json`` rebuilds the world).
        checkpoint: The trained MOC-3 checkpoint (None: only the truth arms run).
        config: The experiment config it was trained with (the run's saved ``config.yaml``).
        weights: The served ensemble weights (default: MOC-3's tuned quick-report weights).
        arms: Arm specs (default :func:`default_arms`; ``model:`` arms are dropped without a checkpoint).
        sessions: F sessions per arm.
        seed: Seed of the sessions and every draw.
        noise: Logit noise of the truth keys.
        calibration_requests: First requests recorded for :func:`calibration`.
        beam_size: Beam width ``B``.
        independent_continue: Noise of ``true_continue`` independent of the value's (see :class:`FeedPredictor`).

    Returns:
        A dict with keys ``arms``, ``comparisons`` (``"<arm> vs <baseline>"`` to the arm, the baseline and, per
        metric, the relative change and its standard error) and ``calibration``.
    """
    from stcrank import registry
    from stcrank.data.eshop.reader import read_manifest
    from stcrank.data.eshop.synth import explore_config_of, load_world
    from stcrank.simulation.evaluation import evaluate_focus
    from stcrank.simulation.model_policy import ModelPredictor, load_task

    manifest = read_manifest(data)
    world, focus_config = load_world(manifest), explore_config_of(manifest).focus
    weights = dict(weights or {"cvr": 1.0, "vtr": 0.2869, "sdr": 0.2738})
    model = None
    if checkpoint is not None:
        if config is None:
            raise ValueError("a checkpoint needs the experiment config it was trained with")
        model = ModelPredictor(load_task(config, checkpoint, data))
    arms = dict(arms or default_arms(weights))
    if model is None:
        arms = {name: arm for name, arm in arms.items() if not name.startswith("model:")}
    predictor = FeedPredictor(model, noise=noise, seed=seed, independent_continue=independent_continue)
    rerankers = {
        "beam": registry.build("rerankers", "beam_search", beam_size=beam_size),
        "exact": registry.build("rerankers", "exact"),
    }
    keys = ["true_continue", "true_sdr_filtered", *(["sdr"] if model is not None else [])]
    recorded = record_feeds(world, predictor, keys, sessions=calibration_requests, seed=seed + 7, config=focus_config)
    cal = {f"{key} vs true_continue": calibration(recorded[key], recorded["true_continue"]) for key in keys[1:]}
    if model is not None:
        cal["sdr vs true_sdr_filtered"] = calibration(recorded["sdr"], recorded["true_sdr_filtered"])
        # arms that re-calibrate the served sdr use the logit-linear fit of the true continuation on it
        fit = cal["sdr vs true_continue"]
        arms = {
            name: {**arm, "slope": fit["logit_slope"], "shift": fit["logit_intercept"]}
            if arm.get("recalibrate")
            else arm
            for name, arm in arms.items()
        }
    policies = attribution_policies(predictor, arms, rerankers)
    evaluation = evaluate_focus(world, policies, sessions=sessions, seed=seed, config=focus_config)
    comparisons: dict[str, Any] = {}
    for name in policies:
        baselines = arms[name].get("baseline") or []
        for baseline in [baselines] if isinstance(baselines, str) else baselines:
            if baseline not in policies:
                continue
            entry: dict[str, Any] = {"arm": name, "baseline": baseline}
            for metric in ("expected_purchases", "purchases", "ipv", "depth"):
                d = evaluation.compare(name, baseline, metric)
                entry[metric] = {"relative": float(d.relative), "relative_se": float(d.relative_se)}
            comparisons[f"{name} vs {baseline}"] = entry
    return {"arms": {k: dict(v) for k, v in arms.items()}, "comparisons": comparisons, "calibration": cal}


def attribution_markdown(result: Mapping[str, Any]) -> str:
    """The comparisons and the calibration of :func:`run_attribution` as Markdown tables."""
    lines = ["| arm | baseline | expected purchases | purchases | IPV | depth |", "|---|---|---:|---:|---:|---:|"]
    for name, c in result["comparisons"].items():
        cells = [
            f"{100 * c[m]['relative']:+.2f}% ± {100 * c[m]['relative_se']:.2f}"
            for m in ("expected_purchases", "purchases", "ipv", "depth")
        ]
        lines.append(f"| `{c.get('arm', name)}` | `{c['baseline']}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| prediction | mean pred | mean true | slope | logit slope | corr |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, c in result["calibration"].items():
        lines.append(
            f"| {name} | {c['mean_pred']:.3f} | {c['mean_true']:.3f} | {c['slope']:.2f} | {c['logit_slope']:.2f} "
            f"| {c['corr']:.2f} |"
        )
    return "\n".join([*lines, ""])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m stcrank.reports.msc_attribution LOGS [--run DIR] [--report JSON] [--out FILE]``.

    ``--run`` is the MOC-3 fit of a report (``<out>/rows/<row>``; it holds ``<experiment>/version_0/config.yaml``
    and ``<experiment>/checkpoints/last.ckpt``); without it only the truth arms run. Prints the Markdown tables.
    """
    import argparse
    import json
    import tempfile

    import yaml

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("logs", help="log directory of the report (manifest.json)")
    parser.add_argument("--run", default=None, help="the MOC-3 fit directory of the report")
    parser.add_argument("--sessions", type=int, default=12000, help="F sessions per arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, default=0.0, help="logit noise of the truth keys")
    parser.add_argument(
        "--independent-continue", action="store_true", help="noise of true_continue independent of the value's"
    )
    parser.add_argument("--report", default=None, help="report.json of the report: MOC-3's served ensemble weights")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    checkpoint = config = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.run is not None:
            checkpoint = min(Path(args.run).rglob("checkpoints/last.ckpt"))
            saved = yaml.safe_load(min(Path(args.run).rglob("version_0/config.yaml")).read_text())
            # the saved run config also holds fit-only keys (ckpt_path, ...) that a model rebuild rejects
            config = Path(tmp) / "config.yaml"
            config.write_text(yaml.safe_dump({k: saved[k] for k in ("seed_everything", "model", "data") if k in saved}))
        weights = None
        if args.report is not None:
            weights = json.loads(Path(args.report).read_text())["rows"]["MOC-3"]["ensemble"]
        result = run_attribution(
            args.logs,
            checkpoint=checkpoint,
            config=config,
            weights=weights,
            sessions=args.sessions,
            seed=args.seed,
            noise=args.noise,
            independent_continue=args.independent_continue,
        )
    print(attribution_markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
