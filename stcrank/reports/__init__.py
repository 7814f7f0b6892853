"""Experiment reports: run an experiment set over several seeds and write the paper's tables.

* :mod:`stcrank.reports.stats`: mean, sample standard deviation and the paired t-test (no SciPy).
* :mod:`stcrank.reports.runner`: one config and one seed, fitted and tested in-process; results cached.
* :mod:`stcrank.reports.tables`: Markdown tables in the paper's layout, with significance marks.
* :mod:`stcrank.reports.plots`: one PNG per table.
* :mod:`stcrank.reports.recflow`: ``stcrank report recflow``, the RecFlow paper's tables and findings.
* ``stcrank.reports.stcrank``: ``stcrank report stcrank``, the STCRank paper's tables.
"""
