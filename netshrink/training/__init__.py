"""Retraining: the one training loop (`loop`), its hooks and retraining settings (`retraining`),
and distillation from a frozen teacher (`distill`)."""
