"""Built-in plugins of group ``stcrank.labels``."""
