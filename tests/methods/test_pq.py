"""Output-aware PQ step (Stock et al. 2020): block layout, output error vs weight-only PQ,
end-to-end compression with distillation, BN statistics through the file, clear setting errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import netshrink
import netshrink.step
from netshrink.calibration.layer_inputs import block_points, forward_order, unblock_labels
from netshrink.data import ArrayDataset
from netshrink.errors import DataError, NetshrinkError, RecipeError
from netshrink.format.codecs.pq import PQ, subvectors
from netshrink.recipe import parse_recipe


def recipe(*steps):
    return parse_recipe({"name": "test", "steps": list(steps)})


def test_block_layout_round_trips_to_subvector_order():
    weight = torch.arange(8 * 2 * 3 * 3, dtype=torch.float32).reshape(8, 2, 3, 3)
    for groups in (1, 2):
        points = block_points(weight, 9, groups)
        ids = torch.arange(points.shape[0] * points.shape[1]).reshape(points.shape[:2])
        flat = unblock_labels(ids, groups)
        torch.testing.assert_close(points.reshape(-1, 9)[flat], subvectors(weight, 9))


class LinearOnImages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(48, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def correlated_images(n: int = 512, seed: int = 0) -> ArrayDataset:
    """uint8 3x4x4 images whose pixels are strongly correlated, with very unequal variances."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(48, 48, generator=gen) * torch.logspace(0, -1.5, 48)[:, None]
    x = (torch.randn(n, 48, generator=gen) @ mixing).reshape(n, 3, 4, 4)
    images = (128 + 40 * x / x.std()).clamp(0, 255).to(torch.uint8)
    return ArrayDataset(images, torch.randint(0, 16, (n,), generator=gen))


def test_output_aware_beats_weight_pq_on_the_layer_output():
    torch.manual_seed(0)
    model, data = LinearOnImages().eval(), correlated_images()
    held_out = correlated_images(256, seed=1).images.float() / 255
    errors = {}
    for objective in ("output", "weights"):
        step = {
            "pq": {"objective": objective, "k": 16, "pointwise_d": 4, "epochs": 0, "calibration": 512, "ridge": 0.0}
        }
        compressed = netshrink.compress(model, recipe(step), data=data, progress=False)
        with torch.no_grad():
            errors[objective] = float((compressed.model(held_out) - model(held_out)).pow(2).mean())
    assert errors["output"] < 0.7 * errors["weights"]


def test_feedback_lowers_the_output_error_with_the_same_codebook():
    torch.manual_seed(0)
    model, data = LinearOnImages().eval(), correlated_images()
    held_out = correlated_images(256, seed=1).images.float() / 255
    errors, books = {}, {}
    for feedback in (False, True):
        step = {"pq": {"k": 16, "pointwise_d": 4, "epochs": 0, "calibration": 512, "feedback": feedback}}
        compressed = netshrink.compress(model, recipe(step), data=data, progress=False)
        books[feedback] = PQ.codebook_and_labels(compressed.plan.entries["fc.weight"].encoded)[0]
        with torch.no_grad():
            errors[feedback] = float((compressed.model(held_out) - model(held_out)).pow(2).mean())
    assert torch.equal(books[True], books[False])  # only the assignment changes
    assert errors[True] < 0.8 * errors[False]


def test_forward_order_follows_the_calls(tiny_net):
    layers = {"fc": tiny_net.fc, "conv": tiny_net.conv}
    assert forward_order(tiny_net, layers, torch.rand(2, 3, 8, 8)) == ["conv", "fc"]


def test_tiny_cnn_compresses_end_to_end_and_file_keeps_bn_statistics(tiny_net, tiny_images, tmp_path):
    steps = recipe(
        {
            "pq": {
                "k": 8,
                "pointwise_d": 4,
                "calibration": 64,
                "epochs": 0.5,
                "stage_epochs": 0.25,
                "batch_size": 32,
                "lr": 0.01,
            }
        },
        {"cast": {}},
    )
    before = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    compressed = netshrink.compress(tiny_net, steps, data=tiny_images, progress=False)
    state = compressed.model.state_dict()
    assert len(torch.unique(subvectors(state["conv.weight"], 9), dim=0)) <= 8
    assert len(torch.unique(subvectors(state["fc.weight"], 4), dim=0)) <= 8
    assert not torch.equal(state["bn.running_mean"], before["bn.running_mean"])  # fine-tuning moved them
    # re-estimated after the last stage on the one calibration batch (64 images), then trained 0.5 x 256 / 32 steps
    assert int(state["bn.num_batches_tracked"]) == 1 + 4
    report = compressed.save(tmp_path / "pq.nsk")
    assert report.ratio > 4
    loaded = netshrink.load(tmp_path / "pq.nsk", model=type(tiny_net)())
    for name, tensor in state.items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(loaded(x), compressed.model.eval()(x))


def test_bad_settings_are_one_line_errors(tiny_net, tiny_images):
    with pytest.raises(RecipeError, match="k must be in"):
        recipe({"pq": {"k": 300}})
    with pytest.raises(RecipeError, match="objective"):
        recipe({"pq": {"objective": "activations"}})
    with pytest.raises(RecipeError, match=r"d=7 does not divide the row length 27 of layer 'conv'"):
        netshrink.compress(tiny_net, recipe({"pq": {"conv_d": 7, "epochs": 0}}), data=tiny_images, progress=False)
    with pytest.raises(NetshrinkError, match="needs training data"):
        netshrink.compress(tiny_net, recipe({"pq": {}}), progress=False)
    with pytest.raises(DataError, match="needs training data"):
        step = recipe({"pq": {}}).steps[0]
        step.apply(tiny_net, netshrink.plan.CompressionPlan(), netshrink.step.StepContext())


def test_weight_objective_without_fine_tuning_needs_no_data(tiny_net):
    compressed = netshrink.compress(
        tiny_net, recipe({"pq": {"objective": "weights", "epochs": 0, "k": 4}}), progress=False
    )
    assert len(torch.unique(subvectors(compressed.model.state_dict()["conv.weight"], 9), dim=0)) <= 4


def test_d_and_k_per_layer_in_overrides(tiny_net):
    step = {"pq": {"objective": "weights", "epochs": 0, "k": 4, "d": 3, "overrides": {"fc": {"d": 8, "k": 2}}}}
    state = netshrink.compress(tiny_net, recipe(step), progress=False).model.state_dict()
    assert len(torch.unique(subvectors(state["conv.weight"], 3), dim=0)) <= 4
    assert len(torch.unique(subvectors(state["fc.weight"], 8), dim=0)) <= 2
    with pytest.raises(RecipeError, match=r"pq overrides 'fc': field 'conv_d' cannot differ per layer"):
        recipe({"pq": {"overrides": {"fc": {"conv_d": 3}}}})


class TinySentenceEncoder(nn.Module):
    """Embedding + Linear, mean-pooled over the mask: the call shape of the sentence model."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 8)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.proj(self.embed(ids))
        return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)


def test_text_batches_calibrate_and_distill_with_mse(tmp_path):
    from netshrink.data import SentencePairs

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 50, (64, 2, 6), generator=gen)
    tokens[:, :, 4:] = 0  # padding
    data = SentencePairs(tokens, torch.rand(64, generator=gen) * 5)
    torch.manual_seed(0)
    model = TinySentenceEncoder()
    steps = recipe(
        {
            "pq": {
                "k": 8,
                "pointwise_d": 4,
                "calibration": 32,
                "calibration_batch": 8,
                "epochs": 0.5,
                "batch_size": 16,
                "distill": "mse",
                "lr": 0.001,
            }
        }
    )
    compressed = netshrink.compress(model, steps, data=data, progress=False)
    state = compressed.model.state_dict()
    for name, d in (("embed.weight", 4), ("proj.weight", 4)):
        assert len(torch.unique(subvectors(state[name], d), dim=0)) <= 8
    compressed.save(tmp_path / "text.nsk")
    loaded = netshrink.load(tmp_path / "text.nsk", model=TinySentenceEncoder())
    ids, mask = tokens[:4, 0], (tokens[:4, 0] != 0).long()
    torch.testing.assert_close(loaded(ids, mask), compressed.model.eval()(ids, mask))


@pytest.mark.parametrize("recalibrate", [True, False])
def test_pq_recalibrates_batchnorm_after_quantizing(tiny_net, tiny_images, recalibrate):
    before = tiny_net.bn.running_mean.clone()
    steps = recipe({"pq": {"k": 4, "pointwise_d": 4, "calibration": 64, "epochs": 0, "recalibrate_bn": recalibrate}})
    state = netshrink.compress(tiny_net, steps, data=tiny_images, progress=False).model.state_dict()
    assert torch.equal(state["bn.running_mean"], before) is not recalibrate


class TwoConvStage(nn.Module):
    """A stem, then a stage of two 8-channel convs (`stage.a`, `stage.b`), then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage = nn.ModuleDict(
            {"a": nn.Conv2d(8, 8, 3, padding=1), "b": nn.Conv2d(8, 8, 3, padding=1), "bn": nn.BatchNorm2d(8)}
        )
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(self.stage["bn"](self.stage["b"](torch.relu(self.stage["a"](x)))))
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("objective, reassign", [("output", 0), ("weights", 0), ("output", 2)])
def test_shared_codebook_is_stored_once_and_stays_shared_through_fine_tuning(
    tiny_images, tmp_path, objective, reassign
):
    torch.manual_seed(0)
    model = TwoConvStage().eval()
    pq = {
        "objective": objective,
        "k": 8,
        "overrides": {"fc": {"k": 4}},
        "pointwise_d": 4,
        "calibration": 64,
        "epochs": 0.5,
        "stage_epochs": 0.25,
        "batch_size": 32,
        "lr": 0.01,
        "share_codebook": True,
        "reassign_every": reassign,
    }
    compressed = netshrink.compress(model, recipe({"pq": pq}), data=tiny_images, progress=False)
    state = compressed.model.state_dict()
    both = torch.cat([subvectors(state["stage.a.weight"], 9), subvectors(state["stage.b.weight"], 9)])
    assert len(torch.unique(both, dim=0)) <= 8  # one codebook for the stage, still one after fine-tuning
    assert len(torch.unique(subvectors(state["stage.a.weight"], 9), dim=0)) > 1
    compressed.save(tmp_path / "shared.nsk")
    records = {rec.name: rec.encoded for rec in netshrink.format.container.read_nsk(tmp_path / "shared.nsk").tensors}
    codebook_bytes = {name: records[name].bytes_by_kind()["codebook"] for name in ("stage.a.weight", "stage.b.weight")}
    assert codebook_bytes == {"stage.a.weight": 8 * 9 * 2, "stage.b.weight": 0}  # stored once, fp16
    loaded = netshrink.load(tmp_path / "shared.nsk", model=TwoConvStage())
    for name, tensor in state.items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    separate = netshrink.compress(
        model, recipe({"pq": {**pq, "share_codebook": False}}), data=tiny_images, progress=False
    ).save(tmp_path / "separate.nsk")
    assert (tmp_path / "shared.nsk").stat().st_size < separate.file_bytes


def test_shared_codebook_needs_one_k_per_stage(tiny_images):
    pq = {"k": 8, "overrides": {"stage.b": {"k": 4}}, "calibration": 64, "epochs": 0, "share_codebook": True}
    with pytest.raises(RecipeError, match="share a codebook"):
        netshrink.compress(TwoConvStage(), recipe({"pq": pq}), data=tiny_images, progress=False)
    with pytest.raises(RecipeError, match="feedback"):
        recipe({"pq": {"share_codebook": True, "feedback": True}})


def test_labels_kept_between_layers_are_one_per_subvector(tiny_net, tiny_images, monkeypatch):
    """The step keeps every layer's labels until the end (a streamed block: all its layers): one code
    per sub-vector, not one per weight (d times the memory; 8 bytes a weight for a 1B-class block)."""
    from netshrink.methods.pq import OutputAwarePQ

    kept: dict[str, torch.Tensor] = {}
    quantize = OutputAwarePQ._quantize

    def spy(self, model, plan, names, *args):
        labels = quantize(self, model, plan, names, *args)
        kept.update(labels)
        return labels

    monkeypatch.setattr(OutputAwarePQ, "_quantize", spy)
    step = {"pq": {"k": 8, "pointwise_d": 4, "calibration": 64, "epochs": 0}}
    compressed = netshrink.compress(tiny_net, recipe(step), data=tiny_images, progress=False)
    assert {name: v.numel() for name, v in kept.items()} == {"conv.weight": 16 * 3, "fc.weight": 10 * 16 * 8 * 8 // 4}
    for name, labels in kept.items():
        assert torch.equal(labels, PQ.labels_of(compressed.plan.entries[name].encoded))
