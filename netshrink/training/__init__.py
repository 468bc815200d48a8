"""Retraining: the one training loop (`loop`), the hooks of retraining methods and the session that
drives them from any training loop (`session`), retraining settings and hooks (`retraining`), and
distillation from a frozen teacher (`distill`)."""
