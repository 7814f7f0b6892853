"""Convert the official RecFlow release into stcrank's columnar store (Parquet, one partition per day).

The store (``docs/data_formats.md`` has the full description)::

    manifest.json                     written last: format, days, test day, feature sizes, row counts
    days/{date}/requests.parquet      one row per request: context codes, user ids, the behaviour sequence
                                      (fixed-size lists of 50), stage_count (fixed-size list of 8: CSR)
    days/{date}/candidates.parquet    every stage row, sorted by (request, stage), aligned with stage_count
    days/{date}/exposures.parquet     the realshow rows in file order, with request_row into requests
    days/{date}/corpus.parquet        exposed video ids accumulated up to this day
    days/{date}/ubm.parquet           the UBM dict's stage rows keyed by past request_id (when present)
    others/{retrieval_test,coarse_rank_test,rank_test}.parquet   the official test files (when present)

The store is written next to ``dst`` and renamed into place only when complete, manifest included, under a lock
(:mod:`~stcrank.data.recflow.importer.destination`): an interrupted import leaves ``dst`` as it was, and its re-run
gives the same store as a clean import. ``all_stage`` is streamed in chunks of ``chunk_rows`` rows (a request
straddling two chunks is carried over whole) and written as Parquet row groups, so memory is bounded by the chunk
plus per-request and per-exposure arrays (``docs/data_formats.md`` lists them); a day whose rows are not grouped
by increasing request id is read whole. Pickles are streamed through stcrank's own pickle reader (the sequence
dict a chunk of requests at a time, in a worker process for a large day), every value is checked against its
column's domain, every join of a day's files is counted, and nothing goes through pandas. A day's stages (decoding
the next chunk, unpickling the sequences, converting the current chunk, writing the last one) run side by side,
and the official test files are copied and each day's files hashed beside the days.

IDs stay raw and 0-based in the store; the batch collate shifts every id by +1 so that 0 is padding. Time codes
(weekday, hour, minute) are computed in UTC+8, never in the host's timezone.

Modules, one job each: :mod:`~stcrank.data.recflow.importer.command` (the command),
:mod:`~stcrank.data.recflow.importer.day` (one day), :mod:`~stcrank.data.recflow.importer.rows` (Feather rows
into columns), :mod:`~stcrank.data.recflow.importer.sequences` and :mod:`~stcrank.data.recflow.importer.ubm`
(the pickles' joins), :mod:`~stcrank.data.recflow.importer.writing` (Parquet),
:mod:`~stcrank.data.recflow.importer.destination` (the store directory and atomic commits),
:mod:`~stcrank.data.recflow.importer.coverage` (the joins' checks), :mod:`~stcrank.data.recflow.importer.pipeline`
(stages read ahead on threads), :mod:`~stcrank.data.recflow.importer.sequence_worker` (the sequence pickle in a
worker process), :mod:`~stcrank.data.recflow.importer.sizes`,
:mod:`~stcrank.data.recflow.importer.official_tests` and :mod:`~stcrank.data.recflow.importer.killpoints` (a test
hook).
"""

from __future__ import annotations

from stcrank.data.recflow.domains import ROW_DOMAINS as ROW_KINDS
from stcrank.data.recflow.importer.command import DEFAULT_CHUNK_ROWS, import_recflow
from stcrank.data.recflow.importer.sequences import SEQ_BATCH_ITEMS
from stcrank.data.recflow.importer.ubm import UBM_STAGES, UbmSource, derive_ubm
from stcrank.data.recflow.importer.writing import PARQUET_OPTIONS

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "PARQUET_OPTIONS",
    "ROW_KINDS",
    "SEQ_BATCH_ITEMS",
    "UBM_STAGES",
    "UbmSource",
    "derive_ubm",
    "import_recflow",
]
