"""Built-in plugins of group ``stcrank.rerankers``."""
