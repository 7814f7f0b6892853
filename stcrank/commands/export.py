"""``stcrank export``: write a trained model, a re-ranker or the whole ranking pipeline as ONNX and torch.export.

Examples::

    stcrank export -c configs/experiments/recflow/rank/din_baseline.yaml --ckpt_path last --out exported/din
    stcrank export --reranker exact --k 10 --out exported/exact
    stcrank export -c configs/experiments/stcrank/moc_3.yaml --ckpt_path last --pipeline
        --ensemble runs/tune/ensemble.yaml --reranker exact --k 10 --out exported/moc3

See the Deploying page of the docs for the files, their input schema and how to load them without stcrank.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from stcrank.errors import UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, raising :class:`~stcrank.errors.UsageError` (one line, exit status 2) on a wrong command line."""

    def error(self, message: str) -> NoReturn:
        """Raise the parser's complaint as a :class:`~stcrank.errors.UsageError`."""
        raise UsageError(message)


def parser() -> argparse.ArgumentParser:
    """The command's options."""
    from stcrank.export.formats import DEFAULT_FORMATS, FORMATS

    parse = _Parser(
        prog="stcrank export",
        description="Export a trained model (the config and checkpoint it was trained with), a re-ranker, or the "
        "ranking pipeline (multi-task model + tuned ensemble + re-ranker) to ONNX and torch.export programs, each "
        "with its input schema and a standalone loader (stcrank_serving.py).",
    )
    parse.add_argument("-c", "--config", help="experiment config the model was trained with (stcrank fit -c ...)")
    parse.add_argument(
        "--ckpt_path",
        help="Lightning checkpoint of that run, or 'last' for runs/<experiment>/checkpoints/last.ckpt as fit wrote it",
    )
    parse.add_argument("--data.root", dest="data_root", help="data directory, if not the config's data.root")
    parse.add_argument("--out", default="exported", help="output folder (default: exported)")
    parse.add_argument(
        "--formats",
        nargs="+",
        default=list(DEFAULT_FORMATS),
        help=f"formats among {', '.join(FORMATS)} (default: {' '.join(DEFAULT_FORMATS)}; aoti needs a C++ compiler)",
    )
    parse.add_argument("--reranker", help="also export this re-ranker: greedy, exact or beam_search")
    parse.add_argument("--k", type=int, default=10, help="list length of the re-ranker (default: 10)")
    parse.add_argument("--beam_size", type=int, default=25, help="beams of beam_search (default: 25)")
    parse.add_argument(
        "--pipeline", action="store_true", help="also export network + ensemble + re-ranker as one graph"
    )
    parse.add_argument(
        "--ensemble", help="the pipeline's ensemble: stcrank tune's ensemble.yaml, or inline YAML like '{cvr: 1}'"
    )
    parse.add_argument(
        "--continue_task", default="sdr", help="prediction used as continuation probability (default: sdr)"
    )
    return parse


def _last_checkpoint(config: str) -> Path:
    """``runs/<experiment>/checkpoints/last.ckpt`` of ``config``, where ``stcrank fit`` with the stock trainer saves."""
    from stcrank.commands.lightning import experiment_name
    from stcrank.export.formats import ExportError

    path = Path("runs") / experiment_name([config], None) / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ExportError(f"--ckpt_path last: no {path} (run stcrank fit -c {config} first, or give the file)")
    return path


def run(argv: list[str]) -> dict[str, Any]:
    """Parse the options, export, and return the manifest (graph -> format -> file)."""
    from stcrank.export.build import export
    from stcrank.export.formats import ExportError

    options = parser().parse_args(argv)
    task = None
    if (options.config is None) != (options.ckpt_path is None):
        raise ExportError("give both -c CONFIG and --ckpt_path CKPT (the config and checkpoint of one run)")
    if options.config is not None:
        from stcrank.simulation.model_policy import load_task

        if options.ckpt_path == "last":
            options.ckpt_path = str(_last_checkpoint(options.config))

        try:
            task = load_task(options.config, options.ckpt_path, options.data_root)
        except (FileNotFoundError, ValueError) as error:
            raise ExportError(str(error)) from error
    return export(
        options.out,
        task=task,
        reranker=options.reranker,
        k=options.k,
        beam_size=options.beam_size,
        pipeline=options.pipeline,
        ensemble=options.ensemble,
        continue_task=options.continue_task,
        formats=tuple(options.formats),
    )


def main(argv: list[str]) -> None:
    """Run ``stcrank export`` and print the manifest as JSON (the console script prints a user error as one line)."""
    print(json.dumps(run(argv), indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
