"""A small trained checkpoint (LeNet-5 on the embedded 4,000 MNIST digits) and short recipes."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Short recipes: retraining (prune, trained quantization), one-shot palette, calibrated PQ.
RECIPES = {
    "retrain": """
name: retrain-short
description: pruning with retraining, then trained quantization, briefly
steps:
  - iterative_prune: {sparsity: 0.8, rounds: 2, epochs: 0.2, lr: 0.01}
  - trained_quantization: {bits: 5, epochs: 0.2, lr: 0.0001}
""",
    "pq": """
name: pq-calibrated
description: output-aware PQ codebooks learnt on calibration inputs, no fine-tuning
steps:
  - pq: {k: 16, conv_d: 5, pointwise_d: 4, epochs: 0, calibration: 128, kmeans_iters: 5}
""",
    "pq-weights": """
name: pq-weights
description: PQ codebooks by weight, one per layer, no data
steps:
  - pq: {k: 16, conv_d: 5, pointwise_d: 4, epochs: 0, objective: weights, recalibrate_bn: false, kmeans_iters: 5}
""",
}


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    from netshrink import api

    path = tmp_path_factory.mktemp("parallel") / "lenet5.nsk"
    api.train("lenet5", path, dataset="mnist5k", epochs=0.5, progress=False)
    return path


@pytest.fixture(scope="session")
def recipes(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recipes")
    paths = {}
    for name, text in RECIPES.items():
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text)
    return paths
