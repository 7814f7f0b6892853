"""The e-shop data module: F-stage page views with one label, mask and weight per task, split by homepage visit.

Batch contract (every value a tensor ``[B]``): the feature columns of the F log (categorical ids as ``int64``,
``item_price`` as ``float32``), the keys ``request_id``, ``session_id`` and ``position``, and for every task
``t`` of ``labels``: ``label_<t>`` (float 0/1), ``mask_<t>`` (bool) and ``weight_<t>`` (float).

Batching and sharding follow :class:`~stcrank.data.recflow.batching.DayBatchSampler` with the split as one block:
training rows are shuffled by ``(seed, epoch)`` and each rank takes a strided share, every rank stepping the same
number of times; evaluation ranks read disjoint contiguous blocks, nothing dropped or repeated. The training
loader is a :class:`~stcrank.data.resumable.ResumableDataLoader`, so a checkpoint taken mid-epoch resumes on the
next batch in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from stcrank.checks import DATA, check_non_negative, check_positive
from stcrank.data.base import BaseDataModule
from stcrank.data.eshop.reader import read_manifest, read_table
from stcrank.data.eshop.schema import F_LOG_COLUMNS, F_LOG_FILE
from stcrank.data.recflow.batching import DayBatchSampler
from stcrank.data.resumable import ResumableDataLoader
from stcrank.errors import ConfigError
from stcrank.options import resolve_plugin
from stcrank.plugins import LabelDefinition

FEATURE_COLUMNS: tuple[str, ...] = tuple(c.name for c in F_LOG_COLUMNS if c.role == "feature")
"""Model-input columns of the F log."""
KEY_COLUMNS: tuple[str, ...] = ("request_id", "session_id", "visit_id", "position", "page_position")
"""Id and position columns carried in every batch."""
SPLITS: tuple[str, ...] = ("train", "val", "test")


class TensorBatches(Dataset):
    """Columns held in memory, indexed by a whole list of rows at once (one gather per batch, no per-row work).

    Args:
        columns: Column name -> tensor ``[N]``.
    """

    def __init__(self, columns: Mapping[str, Tensor]) -> None:
        self.columns = dict(columns)
        lengths = {int(v.shape[0]) for v in self.columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns must share one length, got lengths {sorted(lengths)}")
        self.length = lengths.pop()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: Sequence[int] | tuple[int, np.ndarray]) -> dict[str, Tensor]:
        """Gather rows: a list of row indices, or a sampler key ``(block, rows)`` (the block is ignored)."""
        rows = key[1] if isinstance(key, tuple) else key
        index = torch.as_tensor(np.asarray(rows), dtype=torch.long)
        return {name: values[index] for name, values in self.columns.items()}


def split_of_visit(visit_id: Tensor, val_fraction: float, test_fraction: float, seed: int) -> Tensor:
    """Assign each homepage visit to train (0), validation (1) or test (2) by a seeded hash of its id.

    All page views of a visit (and so of its F sessions) land in one split, so no session is split.

    Args:
        visit_id: Visit id per row, ``[N]``.
        val_fraction: Share of visits in validation.
        test_fraction: Share of visits in test.
        seed: Seed of the hash.

    Returns:
        ``int64`` split code per row.
    """
    x = visit_id.to(torch.int64) * 6364136223846793005 + (seed * 1442695040888963407 + 1)
    x = x ^ (x >> 29)
    u = (x & 0xFFFFFF).double() / float(0x1000000)
    code = torch.zeros_like(visit_id, dtype=torch.int64)
    code[u < val_fraction + test_fraction] = 2
    code[u < val_fraction] = 1
    return code


class EShopDataModule(BaseDataModule):
    """F-stage page views of an e-shop log directory (``stcrank data synth-eshop`` or a real export).

    Args:
        root: Log directory (``manifest.json`` + ``f_log.parquet``).
        labels: Task name -> ``stcrank.labels`` plugin (an entry-point name such as ``"cvr"``, or a configured
            instance), e.g. ``{"cvr": "cvr", "vtr": WatchThresholdLabel(5.0)}``. The model trains one head per task.
        batch_size: Training batch size.
        eval_batch_size: Validation/test/predict batch size.
        val_fraction: Share of homepage visits held out for validation.
        test_fraction: Share of homepage visits held out for test.
        split_seed: Seed of the visit split.
        predict_split: Split served by ``predict`` (``"val"`` writes the cached predictions tuning reads).
        num_workers: DataLoader workers (the data sits in memory; 0 is usually fastest).
        seed: Seed of the training shuffle (a new permutation every epoch, a function of ``(seed, epoch)``).
    """

    def __init__(
        self,
        root: str,
        labels: dict[str, LabelDefinition | str] | None = None,
        batch_size: int = 1024,
        eval_batch_size: int = 4096,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        predict_split: str = "val",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        check_positive(owner, DATA, batch_size=batch_size, eval_batch_size=eval_batch_size)
        check_non_negative(owner, DATA, num_workers=num_workers)
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"--data.val_fraction {val_fraction} and --data.test_fraction {test_fraction}: each must be above 0 "
                "and their sum below 1"
            )
        if predict_split not in SPLITS:
            raise ConfigError(f"--data.predict_split {predict_split}: choose one of {', '.join(SPLITS)}")
        self.root = Path(root)
        raw = labels if labels is not None else {"cvr": "cvr"}
        if not raw:
            raise ConfigError("--data.labels is empty: name at least one task and its label (e.g. {cvr: cvr})")
        self.labels: dict[str, LabelDefinition] = {
            task: resolve_plugin("labels", spec, f"--data.labels.{task}") for task, spec in raw.items()
        }
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.predict_split = predict_split
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, TensorBatches] = {}

    @property
    def tasks(self) -> list[str]:
        """The task names, in ``labels`` order."""
        return list(self.labels)

    @property
    def manifest(self) -> dict:
        """The log directory's manifest."""
        return read_manifest(self.root)

    @property
    def feature_sizes(self) -> dict[str, int]:
        """Embedding sizes of the categorical columns, from the manifest (no data is read)."""
        return dict(self.manifest["feature_sizes"])

    def load_columns(self) -> dict[str, Tensor]:
        """Read the F log, compute every task's label, mask and weight, and return all batch columns.

        Returns:
            Column name -> tensor ``[N]`` (features, keys, ``label_/mask_/weight_<task>``, ``split``).

        Raises:
            EshopSchemaError: If the log is missing, corrupt or off-schema (the message names file and column).
            ValueError: If the log has no rows or a label plugin rejects its columns.
        """
        manifest = self.manifest
        file = self.root / manifest["files"].get("f_log", F_LOG_FILE)
        table = read_table(file, F_LOG_COLUMNS, feature_sizes=manifest["feature_sizes"])
        if table.num_rows == 0:
            raise ValueError(f"{file}: the F log has no rows")
        raw: dict[str, Tensor] = {}
        for name in table.column_names:
            array = table.column(name).to_numpy()
            if array.dtype == np.bool_:
                raw[name] = torch.from_numpy(array.copy())
            elif np.issubdtype(array.dtype, np.integer):
                raw[name] = torch.from_numpy(array.astype(np.int64))
            else:
                raw[name] = torch.from_numpy(array.astype(np.float32))
        columns = {name: raw[name] for name in (*FEATURE_COLUMNS, *KEY_COLUMNS)}
        for task, label in self.labels.items():
            try:
                out = label(raw)
            except (KeyError, ValueError) as error:
                raise ValueError(f"{file}: label of task {task!r}: {error}") from error
            columns[f"label_{task}"] = out.target.float()
            columns[f"mask_{task}"] = out.mask.bool()
            columns[f"weight_{task}"] = out.weight.float()
        columns["split"] = split_of_visit(raw["visit_id"], self.val_fraction, self.test_fraction, self.split_seed)
        return columns

    def setup(self, stage: str | None = None) -> None:
        """Load the logs once and split them by visit."""
        if self.splits:
            return
        columns = self.load_columns()
        code = columns.pop("split")
        for index, name in enumerate(SPLITS):
            rows = torch.nonzero(code == index).squeeze(1)
            self.splits[name] = TensorBatches({k: v[rows] for k, v in columns.items()})
        for name, split in self.splits.items():
            if len(split) == 0:
                raise ValueError(f"{self.root}: the {name} split is empty; use more sessions or larger fractions")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        data = self.splits[split]
        rank, world_size = self.distributed_rank()
        size = self.batch_size if shuffle else self.eval_batch_size
        sampler = DayBatchSampler([len(data)], size, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world_size)
        # The sampler yields whole batches (batch_size=None) and is already sharded, so Lightning leaves it as is.
        loader = ResumableDataLoader(data, sampler=sampler, batch_size=None, num_workers=self.num_workers)
        # Besides the sampler's own settings, these fix what a training epoch holds (checked when a run resumes).
        loader.settings = {
            "--data.split_seed": self.split_seed,
            "--data.val_fraction": self.val_fraction,
            "--data.test_fraction": self.test_fraction,
            "--data.labels": list(self.labels),
        }
        return loader

    def train_dataloader(self) -> DataLoader:
        """Shuffled training page views."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation page views, in log order."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        """Test page views, in log order."""
        return self._loader("test", False)

    def predict_dataloader(self) -> DataLoader:
        """Page views of ``predict_split`` (validation by default), in log order."""
        return self._loader(self.predict_split, False)
