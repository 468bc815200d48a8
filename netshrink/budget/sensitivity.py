"""Per-layer sensitivity: how much the network suffers when ONE layer is compressed, at each setting.

For every conv/linear weight and every setting, only that layer is changed (everything else stays
exact) and the model is scored on a calibration split, a held-out slice of the TRAINING data
(never the test split that reported accuracy uses):

- "bits": the layer is palettized at b bits through the real palette codec (per channel "auto",
  as the one-shot recipes do), so the weights scored are the weights the file would hold;
- "sparsity": the layer is magnitude-pruned to s (per layer) and stored by the sparse codec.

Each point records top-1, cross-entropy loss and the KL divergence KL(p_ref || p) from the
uncompressed model's predictions (smoother than top-1 on a few hundred images, and never
negative), plus the exact bytes that setting costs for that layer (`Encoded.nbits() / 8`), so a
budget can trade bytes against predicted loss (see `netshrink.budget.allocation`). `combined` gives the bytes of
pruning to s and then palettizing the survivors at b bits, the pairs a budget may choose.

JSON format (`FORMAT`), kept flat for plotting:

    {"format": "netshrink-sensitivity/2", "key": "<hash of model tensors + settings>",
     "model": {...identity...}, "dataset": "cifar10", "split": "train-holdout", "samples": 512,
     "settings": {"bits": [2, ...], "sparsity": [0.3, ...], "samples": 512, "seed": 0},
     "baseline": {"top1": 0.9, "loss": 0.3, "kl": 0.0},
     "layers": [{"name": "conv1", "tensor": "conv1.weight", "numel": 432, "fp32_bytes": 1728,
                 "bits":     [{"setting": 2, "top1": ..., "loss": ..., "kl": ..., "bytes": ...,
                               "codebook_bytes": ...}, ...],
                 "sparsity": [{"setting": 0.3, "top1": ..., "loss": ..., "kl": ..., "bytes": ...,
                               "codebook_bytes": ...}, ...],
                 "combined": [{"sparsity": 0.3, "bits": 2, "bytes": ..., "codebook_bytes": ...}, ...]}, ...]}

On several processes (netshrink/parallel/) each layer's curve is measured by one rank: the values do
not depend on the number of processes, and rank 0 alone writes the JSON.

Results are cached: a JSON file whose "key" matches the model's tensors and the settings is
reused instead of measured again. In memory a result is a `curves.SensitivityResult`, which owns
the JSON reading and writing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from netshrink.budget.curves import FORMAT, CombinedSize, LayerSensitivity, Score, SensitivityResult, Trial
from netshrink.data import ArrayDataset
from netshrink.devices import model_device, to_device
from netshrink.errors import DataError
from netshrink.format.codecs import Codec, Dense, Encoded, Palette, Sparse
from netshrink.identity import ModelIdentity
from netshrink.methods.filter_prune import holdout_split
from netshrink.methods.palette import WeightSharing
from netshrink.methods.prune import magnitude_masks
from netshrink.parallel.runtime import is_main, share_work
from netshrink.plan import fingerprint
from netshrink.select import WEIGHT_LAYERS, Selection, select_modules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SensitivityConfig:
    """What to measure: palette bit widths, magnitude sparsities, calibration size and seed."""

    bits: tuple[int, ...] = (2, 3, 4, 5, 6)
    sparsity: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    samples: int = 512
    seed: int = 0
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for bits in self.bits:
            Palette(bits)  # validates
        if not self.bits:
            raise ValueError("give at least one palette bit width")
        if any(not 0 < s < 1 for s in self.sparsity):
            raise ValueError(f"sparsities must be in (0, 1), got {list(self.sparsity)}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")

    @classmethod
    def of(cls, result: SensitivityResult) -> SensitivityConfig:
        """The settings a result was measured with."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in result.settings.items()})


# --- calibration data and scoring --------------------------------------------------------------------


def calibration_split(train: ArrayDataset, samples: int, seed: int) -> ArrayDataset:
    """A deterministic held-out slice of the TRAINING split (the same slicing filter_prune uses)."""
    metric = getattr(train, "metric", "top1")
    if metric != "top1":  # the scorer compares class predictions: (batch, classes) logits and labels
        raise DataError(
            f"sensitivity scores classifiers (top-1, KL of class predictions); a {metric} data set "
            f"({type(train).__name__}) is not supported: compress with a fixed recipe instead of a budget"
        )
    if len(train) < 2:
        raise DataError(f"sensitivity needs training data to hold a calibration slice out, got {len(train)} samples")
    return holdout_split(train, min(samples, len(train) // 2), seed)[1]


class CalibrationScorer:
    """Scores a model against the labels and against the reference model's predictions on one split."""

    def __init__(self, reference: nn.Module, data: ArrayDataset, batch_size: int = 256) -> None:
        device = model_device(reference)  # the split is small: it is kept on the model's device
        self.batches = [to_device(batch, device) for batch in data.loader(batch_size)]
        self.n = len(data)
        self.ref_logp = [F.log_softmax(logits, 1) for logits in self._logits(reference)]
        self.label_map = data.label_map(self.ref_logp[0].shape[1]).to(device)

    def _logits(self, model: nn.Module) -> Iterator[torch.Tensor]:
        model.eval()
        with torch.inference_mode():
            for x, _ in self.batches:
                yield model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x).float()

    def score(self, model: nn.Module) -> Score:
        """top1 (fraction), loss (mean cross-entropy) and kl (mean KL(p_ref || p), nats)."""
        correct, loss, kl = 0, 0.0, 0.0
        for logits, ref, (_, y) in zip(self._logits(model), self.ref_logp, self.batches):
            target = self.label_map[y]
            logp = F.log_softmax(logits, 1)
            correct += int((logits.argmax(1) == target).sum())
            loss += float(F.nll_loss(logp, target, reduction="sum"))
            kl += float(F.kl_div(logp, ref, log_target=True, reduction="sum"))
        return Score(correct / self.n, loss / self.n, max(kl, 0.0) / self.n)


# --- trials: one layer changed, everything else exact --------------------------------------------------


def palette_codec(bits: int, weight: torch.Tensor, seed: int) -> Palette:
    """The codec the one-shot `palette` step (per_channel auto) would give this dense weight."""
    step = WeightSharing(bits=bits, per_channel="auto")
    return Palette(bits, step.channelwise(weight, sparse=False), step.init, seed)


def pruned(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    return weight * magnitude_masks({"w": weight}, sparsity)["w"]


def sizes(encoded: Encoded) -> tuple[int, int]:
    """Bytes in the file, and how many of them are codebooks (the energy model needs the split)."""
    return encoded.nbits() // 8, encoded.bytes_by_kind()["codebook"]


def trial_weights(weight: torch.Tensor, config: SensitivityConfig) -> Iterator[tuple[str, float, torch.Tensor, tuple]]:
    """(axis, setting, decoded weight, sizes) for every setting of one layer, through the real codecs."""
    for bits in config.bits:
        encoded, decoded = palette_codec(bits, weight, config.seed).round_trip(weight)
        yield "bits", bits, decoded, sizes(encoded)
    for sparsity in config.sparsity:
        encoded, decoded = Sparse(Dense("exact")).round_trip(pruned(weight, sparsity))
        yield "sparsity", sparsity, decoded, sizes(encoded)


def combined_bytes(weight: torch.Tensor, config: SensitivityConfig) -> tuple[CombinedSize, ...]:
    """Bytes of prune-to-s then palettize-the-survivors-at-b (one palette for a sparse tensor)."""
    out = []
    for sparsity in config.sparsity:
        survivors = pruned(weight, sparsity)
        for bits in config.bits:
            codec: Codec = Sparse(Palette(bits, False, "optimal", config.seed))
            out.append(CombinedSize(*sizes(codec.encode(survivors)), sparsity, bits))
    return tuple(out)


def measure_layer(
    model: nn.Module, tensor: str, config: SensitivityConfig, scorer: CalibrationScorer, bar: tqdm
) -> LayerSensitivity:
    """Every setting of one layer, restoring its exact weight afterwards."""
    weight = model.state_dict()[tensor]
    original = weight.detach().cpu().clone()  # the trials' codecs run on CPU; copy_ moves each one back
    trials: dict[str, list[Trial]] = {"bits": [], "sparsity": []}
    try:
        for axis, setting, decoded, (size, codebook) in trial_weights(original, config):
            with torch.no_grad():
                weight.copy_(decoded)
            trials[axis].append(Trial(size, codebook, setting, **asdict(scorer.score(model))))
            bar.update(1)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    return LayerSensitivity(
        tensor.rsplit(".", 1)[0],
        tensor,
        original.numel(),
        4 * original.numel(),
        tuple(trials["bits"]),
        tuple(trials["sparsity"]),
        combined_bytes(original, config),
    )


# --- the whole model, with the cache ------------------------------------------------------------------


def layer_tensors(model: nn.Module, config: SensitivityConfig) -> list[str]:
    chosen = select_modules(model, Selection(config.include, config.exclude), WEIGHT_LAYERS, "sensitivity")
    return [f"{name}.weight" for name, _ in chosen]


def cache_key(model: nn.Module, config: SensitivityConfig, dataset: str) -> str:
    """Model identity (every tensor's exact values) + settings + calibration data set."""
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(fingerprint(tensor))
    digest.update(json.dumps({"config": asdict(config), "dataset": dataset, "format": FORMAT}, sort_keys=True).encode())
    return digest.hexdigest()


def default_cache_path(key: str) -> Path:
    root = Path(os.environ.get("NETSHRINK_CACHE", Path.home() / ".cache" / "netshrink"))
    return root / "sensitivity" / f"{key}.json"


def read_cached(path: Path, key: str) -> SensitivityResult | None:
    """The cached result at `path` if it was measured for exactly this key."""
    try:
        cached = SensitivityResult.read(path)
    except DataError:
        return None
    return cached if cached.key == key else None


def measure(
    model: nn.Module,
    train: ArrayDataset,
    config: SensitivityConfig,
    *,
    dataset: str,
    identity: ModelIdentity | None = None,
    progress: bool = True,
) -> SensitivityResult:
    """Measure every selected layer at every setting (no cache; see `sensitivity`)."""
    model = model.eval().to(memory_format=torch.channels_last)
    calibration = calibration_split(train, config.samples, config.seed)
    scorer = CalibrationScorer(model, calibration)
    tensors = layer_tensors(model, config)
    steps = len(tensors) * (len(config.bits) + len(config.sparsity))
    with tqdm(total=steps, desc="sensitivity", unit="trial", disable=not progress) as bar:
        # each layer's curve on one rank (runtime.share_work; the same values for any world size)
        measured = share_work(tensors, lambda name: measure_layer(model, name, config, scorer, bar))
    layers = tuple(measured[name] for name in tensors)
    settings = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}
    return SensitivityResult(
        cache_key(model, config, dataset),
        identity or ModelIdentity(),
        dataset,
        scorer.n,
        settings,
        scorer.score(model),
        layers,
    )


def sensitivity(
    model: nn.Module,
    train: ArrayDataset,
    config: SensitivityConfig,
    *,
    dataset: str,
    path: str | Path | None = None,
    identity: ModelIdentity | None = None,
    progress: bool = True,
) -> SensitivityResult:
    """Cached `measure`: reuse `path` (default: the user cache) when its key matches, else measure and write it."""
    key = cache_key(model, config, dataset)
    target = Path(path) if path is not None else default_cache_path(key)
    cached = read_cached(target, key)
    if cached is not None:
        log.info("sensitivity: reusing %s", target)
        return cached
    result = measure(model, train, config, dataset=dataset, identity=identity, progress=progress)
    if is_main():  # one writer in a distributed run
        result.write(target)
    return result


def load_for_model(path: str | Path, model: nn.Module) -> SensitivityResult:
    """A sensitivity JSON given by the user, checked to be of this very model (its key recomputed)."""
    result = SensitivityResult.read(path)
    try:
        key = cache_key(model, SensitivityConfig.of(result), result.dataset)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path} is not a netshrink sensitivity JSON ({type(exc).__name__}: {exc})") from None
    if result.key != key:
        raise DataError(
            f"{path} was measured on another model or data set than this one; re-run "
            "`netshrink sensitivity` on this model"
        )
    return result
