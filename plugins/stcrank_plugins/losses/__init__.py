"""Built-in plugins of group ``stcrank.losses``."""
