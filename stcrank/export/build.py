"""What ``stcrank export`` writes: the graphs of a trained task, a re-ranker, and the ranking pipeline.

:func:`task_graphs` picks the graphs of a task's network (DIN, DSSM, SASRec, MMoE, ESMM);
:func:`export` traces them (with the re-ranker and the pipeline when asked) and writes every format, a
``manifest.json`` listing the files, and the standalone loader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from stcrank.export.formats import DEFAULT_FORMATS, LOADER_NAME, ExportError, write_graph
from stcrank.export.multitask_graphs import multitask_graph
from stcrank.export.pipeline_graph import pipeline_graph
from stcrank.export.recflow_graphs import din_graphs, dssm_graphs, sasrec_graphs
from stcrank.export.rerank_graphs import reranker_graph
from stcrank.export.schema import GraphSpec

RERANKERS = ("greedy", "exact", "beam_search")
"""Re-rankers that export."""


def feature_sizes_of(task: nn.Module) -> dict[str, int]:
    """The embedding-table sizes a task was built with (its saved hyperparameters)."""
    sizes = getattr(task, "hparams", {}).get("feature_sizes")
    if not sizes:
        raise ExportError(f"{type(task).__name__} has no feature_sizes in its hyperparameters; export a stcrank task")
    return {name: int(size) for name, size in sizes.items()}


def task_graphs(task: nn.Module) -> list[tuple[GraphSpec, nn.Module]]:
    """The graphs of a trained task's network.

    Raises:
        ExportError: For a network stcrank cannot export.
    """
    from stcrank.models.din import DIN
    from stcrank.models.dssm import DSSM
    from stcrank.models.esmm import ESMM
    from stcrank.models.mmoe import MMoE
    from stcrank.models.sasrec import SASRec

    network = getattr(task, "network", task)
    sizes = feature_sizes_of(task)
    if isinstance(network, DIN):
        return din_graphs(network, sizes)
    if isinstance(network, DSSM):
        return dssm_graphs(network, sizes)
    if isinstance(network, SASRec):
        return sasrec_graphs(network, sizes)
    if isinstance(network, MMoE | ESMM):
        return [multitask_graph(network, sizes)]
    raise ExportError(f"network {type(network).__name__} cannot be exported; exportable: DIN, DSSM, SASRec, MMoE, ESMM")


def read_ensemble(source: str) -> tuple[Any, Any]:
    """The ensemble of ``--ensemble``: a YAML file (``stcrank tune --out``'s ``ensemble.yaml``) or inline YAML.

    Accepts the tune snippet (``ensemble: {class_path, init_args}``), its value, ``{name, init_args}`` for any
    ``stcrank.ensembles`` plugin, or a mapping of task weights (the linear formula).

    Returns:
        ``(ensemble, spec)``: the plugin instance and the mapping it was built from.

    Raises:
        ExportError: If the text is not a mapping or names no known ensemble.
    """
    from stcrank.simulation.model_policy import build_ensemble

    path = Path(source)
    text = path.read_text() if path.is_file() else source
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ExportError(f"--ensemble {source}: not YAML ({error.__class__.__name__})") from error
    if isinstance(spec, Mapping) and set(spec) == {"ensemble"}:
        spec = spec["ensemble"]
    if not isinstance(spec, Mapping):
        raise ExportError(
            f"--ensemble {source}: expected a file or YAML mapping such as stcrank tune's ensemble.yaml, or task "
            "weights like '{cvr: 1, vtr: 0.1}'"
        )
    try:
        return build_ensemble(spec), dict(spec)
    except (ValueError, TypeError, LookupError, ImportError, AttributeError) as error:
        raise ExportError(f"--ensemble {source}: {error}") from error


def build_reranker(name: str, beam_size: int) -> Any:
    """A re-ranker plugin instance by name (``--reranker``)."""
    from stcrank import registry

    if name not in RERANKERS:
        raise ExportError(f"--reranker {name}: choose among {', '.join(RERANKERS)}")
    options = {"beam_size": beam_size} if name == "beam_search" else {}
    return registry.build("rerankers", name, **options)


def export(
    out: str | Path,
    task: nn.Module | None = None,
    reranker: str | None = None,
    k: int = 10,
    beam_size: int = 25,
    pipeline: bool = False,
    ensemble: str | None = None,
    continue_task: str = "sdr",
    formats: tuple[str, ...] = DEFAULT_FORMATS,
) -> dict[str, Any]:
    """Write the artefacts.

    Args:
        out: Output folder.
        task: A trained task (its network's graphs are written); None exports the re-ranker alone.
        reranker: Also write this re-ranker's graph (``greedy``, ``exact``, ``beam_search``).
        k: The re-ranker's list length.
        beam_size: Beams of ``beam_search``.
        pipeline: Also write the pipeline graph (network + ensemble + re-ranker; needs a multi-task task,
            ``ensemble`` and ``reranker``).
        ensemble: The ensemble (see :func:`read_ensemble`).
        continue_task: Prediction used as the continuation probability in the pipeline.
        formats: Some of ``onnx``, ``pt2``, ``aoti``.

    Returns:
        The folder's manifest (``manifest.json``): graph name -> format -> file (those of earlier exports into
        the folder included), and the loader's file.

    Raises:
        ExportError: On options that do not fit together or a network that cannot be exported.
    """
    graphs: list[tuple[GraphSpec, nn.Module]] = []
    if task is not None:
        graphs += task_graphs(task)
    rerank = build_reranker(reranker, beam_size) if reranker is not None else None
    if pipeline:
        if task is None or ensemble is None or rerank is None:
            raise ExportError(
                "--pipeline needs a trained multi-task model (-c, --ckpt_path), --ensemble and --reranker"
            )
        if graphs[0][0].name not in ("mmoe", "esmm"):
            raise ExportError(f"--pipeline needs an MMoE or ESMM model; the config trains {graphs[0][0].name}")
        combine, spec = read_ensemble(ensemble)
        graphs.append(
            pipeline_graph(task.network, feature_sizes_of(task), combine, rerank, k, continue_task, ensemble_spec=spec)
        )
    if rerank is not None:
        graphs.append(reranker_graph(rerank, k))
    if not graphs:
        raise ExportError("nothing to export: give a trained model (-c CONFIG --ckpt_path CKPT) or --reranker")
    folder = Path(out)
    # Exports into one folder add up: the manifest keeps the graphs written there before.
    previous = folder / "manifest.json"
    manifest: dict[str, Any] = json.loads(previous.read_text()) if previous.is_file() else {"graphs": {}}
    for spec, module in graphs:
        files = write_graph(spec, module, folder, formats)
        manifest["graphs"][spec.name] = {
            name: str(path.relative_to(folder)) for name, path in files.items() if name != "loader"
        }
    manifest["loader"] = LOADER_NAME
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
