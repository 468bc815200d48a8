"""Compression methods, one module each. Importing this package registers their recipe steps."""

from netshrink.methods import admm, cast, deep_kmeans, iterative_prune, lowrank, magnitude, palette, retraining, trained_quantization
from netshrink.methods import head, structured  # noqa: F401  (gap_head, filter_prune)
from netshrink.methods import pq_output  # noqa: F401  (pq: output-aware product quantization)

__all__ = ["admm", "cast", "deep_kmeans", "iterative_prune", "lowrank", "magnitude", "palette", "retraining", "trained_quantization"]
