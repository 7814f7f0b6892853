"""An example third-party stcrank plugin package."""
