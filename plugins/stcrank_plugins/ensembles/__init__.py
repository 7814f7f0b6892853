"""Built-in plugins of group ``stcrank.ensembles``."""
