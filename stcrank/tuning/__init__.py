"""Bayesian tuning of ensemble weights (STCRank 3.3.3): cached predictions, objectives, studies and reports.

* :mod:`stcrank.tuning.predictions`: the cached-predictions file (write, read, validate);
* :mod:`stcrank.tuning.objectives`: the :class:`~stcrank.tuning.objectives.Objective` interface and AUC objectives;
* :mod:`stcrank.tuning.study`: the optuna study (search space, sampler, storage, resume, workers);
* :mod:`stcrank.tuning.report`: the results table, plot and config snippet.

The package imports nothing itself, so a model that only writes predictions does not import optuna. The command
line is ``stcrank tune``.
"""
