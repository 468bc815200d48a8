"""Recipe steps, one module per step, named as the step. Importing this package registers them."""

from netshrink.methods import (  # noqa: F401  (each module registers its step)
    admm,
    cast,
    deep_kmeans,
    filter_prune,
    gap_head,
    iterative_prune,
    lowrank,
    palette,
    pq,
    prune,
    trained_quantization,
    tune,
)
