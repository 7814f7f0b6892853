"""Experiment reports: run an experiment set over several seeds and write the paper's tables.

* :mod:`stcrank.reports.stats`: mean, sample standard deviation, the paired t-test, Student-t quantiles, the
  minimum detectable effect and the seeds it needs (no SciPy).
* :mod:`stcrank.reports.power`: comparisons over training seeds (total uncertainty) and the four-way verdict.
* :mod:`stcrank.reports.runner`: one config and one seed, fitted and tested in-process; results cached.
* :mod:`stcrank.reports.tables`: Markdown tables in the paper's layout, with significance marks.
* :mod:`stcrank.reports.plots`: one PNG per table.
* :mod:`stcrank.reports.recflow`: ``stcrank report recflow``, the RecFlow paper's tables, and
  :mod:`stcrank.reports.recflow_findings`, its findings with their power.
* ``stcrank.reports.stcrank``: ``stcrank report stcrank``, the STCRank paper's tables in the simulator
  (:mod:`stcrank.reports.stcrank_rows` trains a seed's rows, :mod:`stcrank.reports.stcrank_serving` serves them,
  :mod:`stcrank.reports.comparisons` combines the seeds, :mod:`stcrank.reports.causes` says why a direction does
  not hold).
"""
