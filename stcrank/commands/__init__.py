"""Sub-commands of the ``stcrank`` command line beside the Lightning ones (fit, validate, test, predict)."""
