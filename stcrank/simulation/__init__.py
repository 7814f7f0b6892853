"""The e-shop explore/focus session simulator and policy evaluation."""
