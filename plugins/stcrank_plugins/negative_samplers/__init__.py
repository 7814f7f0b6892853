"""Built-in plugins of group ``stcrank.negative_samplers``."""
