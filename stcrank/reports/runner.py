"""Run one experiment config for one seed in-process, and cache the results as JSON lines.

A run is ``stcrank fit`` then ``stcrank test --ckpt_path <last.ckpt>``, both through
:func:`stcrank.cli.main` in this process (no subprocess, so the imports are paid once per report). The test
metrics are read from ``trainer.callback_metrics`` (``test/<name>``, stored without the prefix).

Every result is keyed by the experiment config's content (the file and, recursively, the config files it
references), the seed, the extra command-line arguments and the data fingerprint, and appended to a JSON-lines
file as soon as it is known. A report that is killed and started again therefore runs only what is missing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import importlib
import inspect
import json
import logging
import math
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stcrank.errors import ConfigError, StcrankError, UsageError

__all__ = [
    "ExperimentRunner",
    "ResultCache",
    "RunResult",
    "RunSpec",
    "collect_results",
    "config_digest",
    "data_fingerprint",
    "data_init_parameters",
    "display_path",
    "last_checkpoint",
    "report_config_path",
    "report_seeds",
    "run_all",
    "run_key",
    "split_names",
]

logger = logging.getLogger(__name__)

Status = Literal["ok", "failed"]
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
# Manifest keys that say where and how fast a store was written, not what it holds.
_VOLATILE_MANIFEST_KEYS = ("source",)
_MAX_ERROR = 500


@dataclass(frozen=True)
class RunSpec:
    """One run: an experiment config trained and tested with one seed on one store.

    Attributes:
        config: The experiment config (a LightningCLI YAML file).
        seed: Passed as ``--seed_everything`` (and as the data module's ``seed`` when it has one).
        store: The data directory passed as ``--data.root``.
        args: Extra command-line arguments for both ``fit`` and ``test`` (e.g. a preset's trainer overrides).
    """

    config: Path
    seed: int
    store: Path
    args: tuple[str, ...] = ()


@dataclass
class RunResult:
    """The outcome of a run, as cached (one JSON line).

    Attributes:
        key: The cache key (see :func:`run_key`).
        config: The config path, as given.
        seed: The seed.
        data: The data fingerprint (see :func:`data_fingerprint`).
        status: ``"ok"`` or ``"failed"``.
        metrics: The test metrics without the ``test/`` prefix (empty when failed); NaN for a metric that is
            undefined on the data (e.g. AUC with one class).
        error: What went wrong, for a failed run.
        seconds: Wall-clock seconds of ``fit`` and ``test``.
        args: The extra command-line arguments of the run.
        finished: When the run finished (ISO 8601, UTC).
    """

    key: str
    config: str
    seed: int
    data: str
    status: Status
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    finished: str = ""

    def to_json(self) -> str:
        """One JSON line (NaN metrics become ``null``, as JSON has no NaN)."""
        record = asdict(self)
        record["metrics"] = {name: (None if math.isnan(v) else v) for name, v in self.metrics.items()}
        return json.dumps(record, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> RunResult:
        """Parse a line written by :meth:`to_json`."""
        record = json.loads(line)
        record["metrics"] = {name: (math.nan if v is None else float(v)) for name, v in record["metrics"].items()}
        return cls(**record)


# -- keys --------------------------------------------------------------------------------------------------------


def _referenced_configs(value: Any, base: Path) -> Iterator[Path]:
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        path = (base / value).resolve()
        if path.is_file():
            yield path
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _referenced_configs(item, base)
    elif isinstance(value, list):
        for item in value:
            yield from _referenced_configs(item, base)


def config_digest(config: str | Path) -> str:
    """SHA-256 of a config's text and of every config file it references, recursively.

    A config composes pieces (``model: ../model/din.yaml``); editing a piece changes the digest of every
    experiment that uses it, so cached results of the old version are not reused.

    Args:
        config: A YAML file.

    Returns:
        The hex digest.

    Raises:
        FileNotFoundError: If the config does not exist.
    """
    digest = hashlib.sha256()
    seen: set[Path] = set()
    pending = [Path(config).resolve()]
    if not pending[0].is_file():
        raise FileNotFoundError(f"{config}: experiment config not found")
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        text = path.read_text()
        digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # the fit reports the syntax error with the file name
        pending.extend(sorted(_referenced_configs(parsed, path.parent), reverse=True))
    return digest.hexdigest()


def _content(value: Any) -> Any:
    """A manifest without what says where and how fast it was written (``source``, ``*seconds``), at any depth."""
    if isinstance(value, dict):
        return {
            k: _content(v)
            for k, v in value.items()
            if k not in _VOLATILE_MANIFEST_KEYS and not str(k).endswith("seconds")
        }
    if isinstance(value, list):
        return [_content(v) for v in value]
    return value


def existing_store(data: str | Path) -> tuple[Path, str]:
    """A store given to a report (``--data``): its resolved path and a one-line description.

    Raises:
        FileNotFoundError: If ``data`` is not a store (no manifest).
    """
    from stcrank.data.recflow.store import read_manifest

    store = Path(data).resolve()
    if not (store / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{store}: not a RecFlow store (no manifest.json); create one with `stcrank data import-recflow`"
        )
    manifest = read_manifest(store)
    return store, f"store `{store}` ({len(manifest['days'])} days, test day {manifest['test_day']})"


def data_fingerprint(store: str | Path) -> str:
    """A fingerprint of a data directory's content: its manifest and the names and sizes of its files.

    The manifest's ``source`` and timings (keys ending in ``seconds``, at any depth) are left out, so the same
    release imported twice (or moved) keeps its fingerprint.

    Args:
        store: The data directory.

    Returns:
        A 16-character hex digest.

    Raises:
        FileNotFoundError: If the directory does not exist.
    """
    root = Path(store)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data directory not found")
    digest = hashlib.sha256()
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            content = json.loads(manifest.read_text())
        except json.JSONDecodeError:
            content = manifest.read_text()
        digest.update(json.dumps(_content(content), sort_keys=True, default=str).encode())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]


def run_key(spec: RunSpec, fingerprint: str) -> str:
    """The cache key of a run: config content, seed, extra arguments and data fingerprint."""
    payload = json.dumps(
        {"config": config_digest(spec.config), "seed": spec.seed, "args": list(spec.args), "data": fingerprint},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


# -- the config's data module ------------------------------------------------------------------------------------


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def data_init_parameters(config: str | Path) -> set[str] | None:
    """The ``__init__`` parameter names of the data module an experiment config uses, if it can tell.

    Follows ``data:`` (a file reference or an inline ``class_path``) and imports the class.

    Args:
        config: An experiment config.

    Returns:
        The parameter names, or None when the class cannot be determined or imported.
    """
    path = Path(config)
    parsed = _load_yaml(path)
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if isinstance(data, str):
        data = _load_yaml((path.parent / data).resolve())
    class_path = data.get("class_path") if isinstance(data, dict) else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
        return set(inspect.signature(cls.__init__).parameters) - {"self"}
    except (ImportError, AttributeError, TypeError, ValueError):
        return None


# -- one run -----------------------------------------------------------------------------------------------------


def last_checkpoint(root: str | Path) -> Path:
    """The newest ``checkpoints/last.ckpt`` under ``root`` (``<experiment>/checkpoints/last.ckpt`` of a run).

    Raises:
        FileNotFoundError: If there is none.
    """
    found = [(path.stat().st_mtime_ns, str(path), path) for path in Path(root).rglob("checkpoints/last.ckpt")]
    if not found:
        raise FileNotFoundError(f"{root}: no checkpoints/last.ckpt after fitting")
    return max(found)[2]


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _slug(path: Path) -> str:
    parts = path.with_suffix("").parts[-3:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(parts))


@contextlib.contextmanager
def _captured(log_path: Path, quiet: bool) -> Iterator[None]:
    """Send stdout, stderr and Lightning's log messages to ``log_path`` while the run lasts."""
    if not quiet:
        yield
        return
    with log_path.open("a") as stream, contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
        # Lightning's handlers keep the terminal stream they were created with: point them at the log meanwhile.
        handlers = [
            handler
            for name in _LIGHTNING_LOGGERS
            for handler in logging.getLogger(name).handlers
            if type(handler) is logging.StreamHandler
        ]
        previous = [handler.stream for handler in handlers]
        for handler in handlers:
            handler.setStream(stream)
        try:
            yield
        finally:
            for handler, old in zip(handlers, previous, strict=True):
                handler.setStream(old)


def _error_message(error: BaseException, log_path: Path) -> str:
    if isinstance(error, SystemExit):
        # jsonargparse prints the reason of a rejected config to stderr and exits: take it from the log.
        lines = (
            [line.strip() for line in log_path.read_text().splitlines() if line.strip()] if log_path.exists() else []
        )
        reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        return f"command line rejected the config (exit {error.code}): {reason}".strip()
    if isinstance(error, UsageError):  # the command line's own one-line explanation
        return f"command line rejected the config: {error}"
    # jsonargparse wraps the error a class raised while being built ("Does not validate against any of the Union
    # subtypes"); the original, explicit cause says what is wrong.
    while error.__cause__ is not None and not isinstance(error, StcrankError):
        error = error.__cause__
    text = " ".join(str(error).split())
    if len(text) > _MAX_ERROR:
        text = text[: _MAX_ERROR - 1] + "…"
    return f"{type(error).__name__}: {text}".strip()


class ExperimentRunner:
    """Fit and test experiment configs in this process through :func:`stcrank.cli.main`.

    Each run gets a fresh directory ``<workdir>/<config>/<key>/`` (cleared first, so a run cut short earlier
    leaves nothing behind) for its logs, checkpoints and ``run.log`` (the captured console output).

    Args:
        workdir: Where run directories go.
        quiet: Capture each run's console output in its ``run.log`` instead of printing it.
        keep_checkpoints: Keep the checkpoints after testing (they are large with a real vocabulary).
        seed_data: Also pass the seed as the data module's ``seed`` (the within-day shuffle and candidate order)
            when its class has that parameter.
        reuse_fit: Test with the fitted run's own Trainer, model and data module
            (``trainer.test(ckpt_path=last.ckpt)``) instead of a second ``stcrank test`` command. The weights and
            data are the same, so are the metrics; it saves parsing and building everything a second time.
    """

    def __init__(
        self,
        workdir: str | Path,
        quiet: bool = True,
        keep_checkpoints: bool = False,
        seed_data: bool = True,
        reuse_fit: bool = False,
    ) -> None:
        self.workdir = Path(workdir)
        self.quiet = quiet
        self.keep_checkpoints = keep_checkpoints
        self.seed_data = seed_data
        self.reuse_fit = reuse_fit

    def command(self, spec: RunSpec, run_dir: Path) -> list[str]:
        """The arguments shared by ``fit`` and ``test`` for a run (without the sub-command)."""
        args = [
            "-c",
            str(spec.config),
            f"--data.root={spec.store}",
            f"--trainer.default_root_dir={run_dir}",
            f"--trainer.logger.init_args.save_dir={run_dir}",
            f"--seed_everything={spec.seed}",
        ]
        if self.seed_data and "seed" in (data_init_parameters(spec.config) or ()):
            args.append(f"--data.init_args.seed={spec.seed}")
        if self.quiet:  # nobody watches a captured progress bar
            args += ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
        return [*args, *spec.args]

    def __call__(self, spec: RunSpec, key: str) -> tuple[dict[str, float], dict[str, float]]:
        """Fit and test one run.

        Args:
            spec: The run.
            key: Its cache key (names the run directory).

        Returns:
            The test metrics (without the ``test/`` prefix) and the seconds of ``fit`` and ``test``.

        Raises:
            RuntimeError: With a one-line reason, if anything fails (a rejected config included).
        """
        from stcrank.cli import main

        run_dir = self.workdir / _slug(Path(spec.config)) / key
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        log_path = run_dir / "run.log"
        common = self.command(spec, run_dir)
        seconds: dict[str, float] = {}
        try:
            with _captured(log_path, self.quiet):
                started = time.perf_counter()
                fitted = main(["fit", *common])
                seconds["fit"] = time.perf_counter() - started
                started = time.perf_counter()
                checkpoint = last_checkpoint(run_dir)
                if self.reuse_fit:
                    fitted.trainer.test(fitted.model, datamodule=fitted.datamodule, ckpt_path=str(checkpoint))
                    trainer = fitted.trainer
                else:
                    trainer = main(["test", *common, f"--ckpt_path={checkpoint}"]).trainer
                seconds["test"] = time.perf_counter() - started
                metrics = {
                    name.removeprefix("test/"): float(value)
                    for name, value in trainer.callback_metrics.items()
                    if name.startswith("test/")
                }
        except (Exception, SystemExit) as error:  # a failed run is recorded, the report goes on
            message = _error_message(error, log_path)
            with log_path.open("a") as log:  # as the command line would have printed it
                log.write(f"error: {message}\n")
            raise RuntimeError(message) from error
        finally:
            gc.collect()  # the Trainer, model and loaders of the run are no longer needed
        if not metrics:
            raise RuntimeError("the test logged no test/ metrics")
        if not self.keep_checkpoints:
            for checkpoint in run_dir.rglob("*.ckpt"):
                checkpoint.unlink()
        return metrics, seconds


# -- the cache ---------------------------------------------------------------------------------------------------


class ResultCache:
    """Run results in a JSON-lines file: read once, appended to as results arrive.

    The last record of a key wins. A truncated last line (a report killed while writing) is skipped with a warning.

    Args:
        path: The JSON-lines file (created with its folder on the first write).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.results: dict[str, RunResult] = {}
        if self.path.exists():
            for number, line in enumerate(self.path.read_text().splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    result = RunResult.from_json(line)
                except (json.JSONDecodeError, TypeError, KeyError) as error:
                    logger.warning("%s:%d: skipping an unreadable result (%s)", self.path, number, error)
                    continue
                self.results[result.key] = result

    def get(self, key: str) -> RunResult | None:
        """The cached result of a key, if any."""
        return self.results.get(key)

    def add(self, result: RunResult) -> None:
        """Record a result (appended and flushed at once)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as stream:
            stream.write(result.to_json() + "\n")
            stream.flush()
        self.results[result.key] = result


# -- many runs ---------------------------------------------------------------------------------------------------

Runner = Callable[[RunSpec, str], "tuple[dict[str, float], dict[str, float]]"]
"""Fits and tests one run: ``(spec, key) -> (metrics, seconds)``; raises on failure."""


def run_all(
    specs: Sequence[RunSpec],
    runner: Runner,
    cache: ResultCache,
    fingerprint: str,
    retry_failed: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Run what the cache lacks, in the given order, recording each result as soon as it is known.

    Args:
        specs: The runs.
        runner: Fits and tests one run (an :class:`ExperimentRunner`, or a stand-in in tests).
        cache: Where results are looked up and recorded.
        fingerprint: The data fingerprint of every spec's store.
        retry_failed: Run again the runs whose cached result is a failure.
        progress: Called with a one-line message per run.

    Returns:
        The results, in the order of ``specs``.
    """
    results: list[RunResult] = []
    for index, spec in enumerate(specs, start=1):
        key = run_key(spec, fingerprint)
        cached = cache.get(key)
        if cached is not None and (cached.status == "ok" or not retry_failed):
            results.append(cached)
            continue
        started = time.perf_counter()
        try:
            metrics, seconds = runner(spec, key)
            result = RunResult(key, str(spec.config), spec.seed, fingerprint, "ok", metrics, None, seconds)
        except (Exception, SystemExit) as error:
            message = str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__}: {error}"
            seconds = {"total": time.perf_counter() - started}
            result = RunResult(key, str(spec.config), spec.seed, fingerprint, "failed", {}, message, seconds)
        result.args = list(spec.args)
        result.finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        cache.add(result)
        results.append(result)
        if progress is not None:
            elapsed = time.perf_counter() - started
            outcome = "ok" if result.status == "ok" else f"FAILED: {result.error}"
            progress(f"[{index}/{len(specs)}] {_shown(spec.config)} seed {spec.seed}: {outcome} ({elapsed:.1f} s)")
    return results


def collect_results(
    specs: Sequence[RunSpec],
    cache: ResultCache,
    fingerprint: str,
    runner: Runner | None,
    threads: int,
    retry_failed: bool = True,
) -> dict[tuple[Path, int], RunResult]:
    """Run what the cache lacks (or only read the cache) and key the known results by ``(config, seed)``.

    The key is the spec's config path, not the one stored in the cache: the checkout may have moved since.

    Args:
        specs: The runs.
        cache: Where results are looked up and recorded.
        fingerprint: The data fingerprint of every spec's store.
        runner: Fits and tests one run; None reads the cached results only.
        threads: ``torch.set_num_threads`` while running (restored afterwards).
        retry_failed: Run again the runs whose cached result is a failure.

    Returns:
        The result of every spec that has one.
    """
    if runner is None:
        results = [cache.get(run_key(spec, fingerprint)) for spec in specs]
    else:
        import torch  # lazily: reading a cache needs no torch

        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
            results = run_all(specs, runner, cache, fingerprint, retry_failed=retry_failed, progress=progress)
        finally:
            torch.set_num_threads(previous)
    return {(spec.config, spec.seed): r for spec, r in zip(specs, results, strict=True) if r is not None}


# -- report options ----------------------------------------------------------------------------------------------


def split_names(value: str | Sequence[str] | None) -> list[str] | None:
    """Names from a comma-separated option, given as a string or a list of (comma-separated) strings.

    Args:
        value: The option's value.

    Returns:
        The stripped, non-empty names; None when the option is not given.
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [part for item in value for part in item.split(",")]
    return [item.strip() for item in items if item.strip()]


def display_path(path: Path) -> str:
    """The path relative to the working directory when it lies below it, else as given."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def report_seeds(first_seed: int, seeds: int) -> list[int]:
    """The seeds of a report: ``first_seed`` to ``first_seed + seeds - 1``.

    Raises:
        ConfigError: When ``seeds`` is below 1.
    """
    seed_list = list(range(first_seed, first_seed + seeds))
    if not seed_list:
        raise ConfigError("--seeds must be >= 1")
    return seed_list


def report_config_path(report_config: str, default: str) -> Path:
    """The report config's path; the default one outside the repository is the copy next to an editable install.

    Args:
        report_config: The ``--report_config`` given.
        default: The report's default config, relative to the repository.
    """
    path = Path(report_config)
    if not path.is_file() and report_config == default:
        path = Path(__file__).resolve().parents[2] / default
    return path
