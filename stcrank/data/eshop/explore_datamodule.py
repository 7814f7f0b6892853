"""The e-shop explore data module: every homepage exposure with the ESMM product labels (STCRank 3.4.1).

One row per E-log exposure (clicked or not: the products are defined on the whole exposure space). Each
product task ``t`` of :data:`PRODUCT_LABELS` has ``label_<t>`` (the product of its 0/1 events), ``mask_<t>``
(all true) and ``weight_<t>`` (all 1). The look-ahead event ``f_conv`` (eq. 7: at least one purchase in the F
session entered through the exposure) is computed by joining the exposure's ``f_session_id`` to the F log's
``session_id``. Batches carry the E log's feature columns and the keys ``request_id``, ``visit_id`` and
``position``; the split is by homepage visit with the same hash as
:class:`~stcrank.data.eshop.datamodule.EShopDataModule`, so an E exposure and the F session it led to land in
the same split.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from stcrank.data.eshop.datamodule import EShopDataModule, split_of_visit
from stcrank.data.eshop.reader import read_table
from stcrank.data.eshop.schema import E_LOG_COLUMNS, E_LOG_FILE, F_LOG_COLUMNS, F_LOG_FILE, EshopSchemaError

E_FEATURE_COLUMNS: tuple[str, ...] = tuple(c.name for c in E_LOG_COLUMNS if c.role == "feature")
"""Model-input columns of the E log."""
E_KEY_COLUMNS: tuple[str, ...] = ("request_id", "visit_id", "position")
"""Id and position columns carried in every batch."""
PRODUCT_LABELS: dict[str, tuple[str, ...]] = {
    "ctr": ("click",),
    "ctr_sdr": ("click", "swipe"),
    "ctr_sdr_cvrf": ("click", "swipe", "f_conv"),
    "cvr_e": ("click", "purchase"),
}
"""Product task -> the exposure events whose product is its label (``f_conv`` from the F log)."""


def f_session_conversions(f_log: pa.Table) -> pa.Array:
    """Ids of the F sessions with at least one purchase.

    Args:
        f_log: The F log (``session_id`` and ``purchase`` columns).

    Returns:
        The distinct session ids, ``int64``.
    """
    import pyarrow.compute as pc  # lazily: it costs start-up time of every command

    bought = f_log.filter(f_log.column("purchase"))
    return pc.unique(bought.column("session_id")) if bought.num_rows else pa.array([], pa.int64())


def look_ahead_events(e_log: pa.Table, f_log: pa.Table, *, file: str = E_LOG_FILE) -> np.ndarray:
    """The eq. 7 event per exposure: it led into an F session with at least one purchase.

    Args:
        e_log: The E log (``swipe``, ``f_session_id``).
        f_log: The F log (``session_id``, ``purchase``).
        file: E-log file name for error messages.

    Returns:
        ``bool`` array, one per E-log row.

    Raises:
        EshopSchemaError: If a swipe has no F session id, a non-swipe has one, or an id is not in the F log.
    """
    import pyarrow.compute as pc  # lazily: it costs start-up time of every command

    swipe = e_log.column("swipe").to_numpy()
    session = e_log.column("f_session_id").to_numpy()
    bad = np.flatnonzero(swipe != (session >= 0))
    if bad.size:
        raise EshopSchemaError(
            f"{file}: column 'f_session_id' is {session[bad[0]]} at row {bad[0]} where swipe is {bool(swipe[bad[0]])};"
            " expected an F session id (>= 0) exactly on the rows with swipe"
        )
    entered = session[swipe]
    known = pc.is_in(pa.array(entered), value_set=pc.unique(f_log.column("session_id"))).to_numpy(zero_copy_only=False)
    if not known.all():
        missing = entered[~known][0]
        raise EshopSchemaError(f"{file}: column 'f_session_id' names session {missing}, which the F log does not hold")
    converted = pc.is_in(pa.array(session), value_set=f_session_conversions(f_log)).to_numpy(zero_copy_only=False)
    return converted & swipe


def _tensor(array: np.ndarray) -> Tensor:
    if array.dtype == np.bool_:
        return torch.from_numpy(array.copy())
    if np.issubdtype(array.dtype, np.integer):
        return torch.from_numpy(array.astype(np.int64))
    return torch.from_numpy(array.astype(np.float32))


class EShopExploreDataModule(EShopDataModule):
    """Homepage exposures of an e-shop log directory with ESMM product labels.

    Args:
        root: Log directory (``manifest.json``, ``e_log.parquet`` and ``f_log.parquet``).
        tasks: Product tasks to label (keys of :data:`PRODUCT_LABELS`); all of them when None.
        batch_size: Training batch size.
        eval_batch_size: Validation/test/predict batch size.
        val_fraction: Share of homepage visits held out for validation.
        test_fraction: Share of homepage visits held out for test.
        split_seed: Seed of the visit split.
        predict_split: Split served by ``predict``.
        num_workers: DataLoader workers.
        seed: Seed of the training shuffle (a new permutation every epoch, a function of ``(seed, epoch)``).
    """

    def __init__(
        self,
        root: str,
        tasks: list[str] | None = None,
        batch_size: int = 1024,
        eval_batch_size: int = 4096,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        predict_split: str = "val",
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root,
            labels=None,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            split_seed=split_seed,
            predict_split=predict_split,
            num_workers=num_workers,
            seed=seed,
        )
        chosen = list(tasks) if tasks is not None else list(PRODUCT_LABELS)
        unknown = [t for t in chosen if t not in PRODUCT_LABELS]
        if not chosen or unknown:
            raise ValueError(f"tasks must be a non-empty subset of {list(PRODUCT_LABELS)}; got {chosen}")
        self.labels = {}
        self.product_tasks = chosen

    @property
    def tasks(self) -> list[str]:
        """The product tasks, in ``tasks`` order."""
        return list(self.product_tasks)

    def load_columns(self) -> dict[str, Tensor]:
        """Read the E log, join the F log for the look-ahead event, and return all batch columns.

        Returns:
            Column name -> tensor ``[N]`` (features, keys, ``label_/mask_/weight_<task>``, ``split``).

        Raises:
            EshopSchemaError: If a log is missing, corrupt or off-schema, or the two logs do not join.
            ValueError: If the E log has no rows.
        """
        manifest = self.manifest
        sizes = manifest["feature_sizes"]
        e_file = self.root / manifest["files"].get("e_log", E_LOG_FILE)
        f_file = self.root / manifest["files"].get("f_log", F_LOG_FILE)
        e_log = read_table(e_file, E_LOG_COLUMNS, feature_sizes=sizes)
        if e_log.num_rows == 0:
            raise ValueError(f"{e_file}: the E log has no rows")
        f_log = read_table(f_file, F_LOG_COLUMNS, read_columns=["session_id", "purchase"])
        events = {name: e_log.column(name).to_numpy() for name in ("click", "swipe", "purchase")}
        events["f_conv"] = look_ahead_events(e_log, f_log, file=str(e_file))
        columns = {name: _tensor(e_log.column(name).to_numpy()) for name in (*E_FEATURE_COLUMNS, *E_KEY_COLUMNS)}
        n = e_log.num_rows
        for task in self.product_tasks:
            label = np.logical_and.reduce([events[e] for e in PRODUCT_LABELS[task]])
            columns[f"label_{task}"] = torch.from_numpy(label.astype(np.float32))
            columns[f"mask_{task}"] = torch.ones(n, dtype=torch.bool)
            columns[f"weight_{task}"] = torch.ones(n, dtype=torch.float32)
        columns["split"] = split_of_visit(columns["visit_id"], self.val_fraction, self.test_fraction, self.split_seed)
        return columns
