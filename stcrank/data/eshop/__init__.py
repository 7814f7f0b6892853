"""E-shop explore/focus logs: the Parquet schema, a validating reader and the synthetic generator.

* :mod:`~stcrank.data.eshop.schema`: columns of the F log and the E log, validation.
* :mod:`~stcrank.data.eshop.reader`: :func:`~stcrank.data.eshop.reader.read_eshop`.
* :mod:`~stcrank.data.eshop.synth`: :func:`~stcrank.data.eshop.synth.synth_eshop` (``stcrank data synth-eshop``).
"""

from stcrank.data.eshop.reader import EshopLogs, read_eshop, read_manifest, read_table
from stcrank.data.eshop.schema import (
    E_LOG_COLUMNS,
    F_LOG_COLUMNS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Column,
    EshopSchemaError,
    arrow_schema,
    validate_table,
)

__all__ = [
    "E_LOG_COLUMNS",
    "F_LOG_COLUMNS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "Column",
    "EshopLogs",
    "EshopSchemaError",
    "arrow_schema",
    "read_eshop",
    "read_manifest",
    "read_table",
    "validate_table",
]
