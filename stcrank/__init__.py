"""stcrank: a plugin-based ranking toolkit on PyTorch Lightning."""

__version__ = "0.1.0"
