"""Datasets: schemas, importers, columnar stores, data modules and synthetic generators."""
