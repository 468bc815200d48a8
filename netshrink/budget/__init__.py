"""Automatic budgets: per-layer sensitivity curves (`sensitivity`) and the per-layer bits and
sparsity that meet a whole-file size or energy target (`allocation`)."""
