"""Networks: plain torch modules (SASRec, DSSM, DIN, MMoE and their building blocks)."""
