"""Tasks: LightningModules that train and evaluate stcrank models."""
