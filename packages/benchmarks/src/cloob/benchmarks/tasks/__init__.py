"""The evaluations, one per module or sub-package; no task imports another."""
