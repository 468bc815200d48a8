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

Results are cached: a JSON file whose "key" matches the model's tensors and the settings is
reused instead of measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from netshrink.format.codecs import Codec, Dense, Encoded, Palette, Sparse
from netshrink.data import ArrayDataset
from netshrink.errors import DataError
from netshrink.methods.prune import magnitude_masks
from netshrink.methods.palette import WeightSharing
from netshrink.methods.filter_prune import holdout_split
from netshrink.plan import fingerprint
from netshrink.select import WEIGHT_LAYERS, Selection, select_modules

log = logging.getLogger(__name__)
FORMAT = "netshrink-sensitivity/2"


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


# --- calibration data and scoring --------------------------------------------------------------------


def calibration_split(train: ArrayDataset, samples: int, seed: int) -> ArrayDataset:
    """A deterministic held-out slice of the TRAINING split (the same slicing filter_prune uses)."""
    if len(train) < 2:
        raise DataError(f"sensitivity needs training data to hold a calibration slice out, got {len(train)} samples")
    return holdout_split(train, min(samples, len(train) // 2), seed)[1]


class CalibrationScorer:
    """Scores a model against the labels and against the reference model's predictions on one split."""

    def __init__(self, reference: nn.Module, data: ArrayDataset, batch_size: int = 256) -> None:
        self.batches = list(data.loader(batch_size))
        self.n = len(data)
        self.ref_logp = [F.log_softmax(logits, 1) for logits in self._logits(reference)]
        self.label_map = data.label_map(self.ref_logp[0].shape[1])

    def _logits(self, model: nn.Module) -> Iterator[torch.Tensor]:
        model.eval()
        with torch.inference_mode():
            for x, _ in self.batches:
                yield model(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x).float()

    def score(self, model: nn.Module) -> dict[str, float]:
        """top1 (fraction), loss (mean cross-entropy) and kl (mean KL(p_ref || p), nats)."""
        correct, loss, kl = 0, 0.0, 0.0
        for logits, ref, (_, y) in zip(self._logits(model), self.ref_logp, self.batches):
            target = self.label_map[y]
            logp = F.log_softmax(logits, 1)
            correct += int((logits.argmax(1) == target).sum())
            loss += float(F.nll_loss(logp, target, reduction="sum"))
            kl += float(F.kl_div(logp, ref, log_target=True, reduction="sum"))
        return {"top1": correct / self.n, "loss": loss / self.n, "kl": max(kl, 0.0) / self.n}


# --- trials: one layer changed, everything else exact --------------------------------------------------


def palette_codec(bits: int, weight: torch.Tensor, seed: int) -> Palette:
    """The codec the one-shot `palette` step (per_channel auto) would give this dense weight."""
    step = WeightSharing(bits=bits, per_channel="auto")
    return Palette(bits, step.channelwise(weight, sparse=False), step.init, seed)


def pruned(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    return weight * magnitude_masks({"w": weight}, sparsity)["w"]


def sizes(encoded: Encoded) -> dict[str, int]:
    """Bytes in the file, and how many of them are codebooks (the energy model needs the split)."""
    return {"bytes": encoded.nbits() // 8, "codebook_bytes": encoded.bytes_by_kind()["codebook"]}


def trial_weights(weight: torch.Tensor, config: SensitivityConfig) -> Iterator[tuple[str, float, torch.Tensor, dict]]:
    """(kind, setting, decoded weight, sizes) for every setting of one layer, through the real codecs."""
    for bits in config.bits:
        encoded, decoded = palette_codec(bits, weight, config.seed).round_trip(weight)
        yield "bits", bits, decoded, sizes(encoded)
    for sparsity in config.sparsity:
        encoded, decoded = Sparse(Dense("exact")).round_trip(pruned(weight, sparsity))
        yield "sparsity", sparsity, decoded, sizes(encoded)


def combined_bytes(weight: torch.Tensor, config: SensitivityConfig) -> list[dict[str, Any]]:
    """Bytes of prune-to-s then palettize-the-survivors-at-b (one palette for a sparse tensor)."""
    out = []
    for sparsity in config.sparsity:
        survivors = pruned(weight, sparsity)
        for bits in config.bits:
            codec: Codec = Sparse(Palette(bits, False, "optimal", config.seed))
            out.append({"sparsity": sparsity, "bits": bits, **sizes(codec.encode(survivors))})
    return out


def measure_layer(model: nn.Module, tensor: str, config: SensitivityConfig, scorer: CalibrationScorer,
                  bar: tqdm) -> dict[str, Any]:
    """Every setting of one layer, restoring its exact weight afterwards."""
    weight = model.state_dict()[tensor]
    original = weight.detach().clone()
    row: dict[str, Any] = {"name": tensor.rsplit(".", 1)[0], "tensor": tensor, "numel": original.numel(),
                           "fp32_bytes": 4 * original.numel(), "bits": [], "sparsity": []}
    try:
        for kind, setting, decoded, size in trial_weights(original, config):
            with torch.no_grad():
                weight.copy_(decoded)
            row[kind].append({"setting": setting, **scorer.score(model), **size})
            bar.update(1)
    finally:
        with torch.no_grad():
            weight.copy_(original)
    row["combined"] = combined_bytes(original, config)
    return row


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


def read_cached(path: Path, key: str) -> dict[str, Any] | None:
    """The cached result at `path` if it was measured for exactly this key."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return cached if isinstance(cached, dict) and cached.get("key") == key else None


def measure(model: nn.Module, train: ArrayDataset, config: SensitivityConfig, *, dataset: str,
            identity: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Measure every selected layer at every setting (no cache; see `sensitivity`)."""
    model = model.eval().to(memory_format=torch.channels_last)
    calibration = calibration_split(train, config.samples, config.seed)
    scorer = CalibrationScorer(model, calibration)
    tensors = layer_tensors(model, config)
    steps = len(tensors) * (len(config.bits) + len(config.sparsity))
    with tqdm(total=steps, desc="sensitivity", unit="trial", disable=not progress) as bar:
        layers = [measure_layer(model, name, config, scorer, bar) for name in tensors]
    return {"format": FORMAT, "key": cache_key(model, config, dataset), "model": identity or {},
            "dataset": dataset, "split": "train-holdout", "samples": scorer.n,
            "settings": asdict(config), "baseline": scorer.score(model), "layers": layers}


def sensitivity(model: nn.Module, train: ArrayDataset, config: SensitivityConfig, *, dataset: str,
                path: str | Path | None = None, identity: dict[str, Any] | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Cached `measure`: reuse `path` (default: the user cache) when its key matches, else measure and write it."""
    key = cache_key(model, config, dataset)
    target = Path(path) if path is not None else default_cache_path(key)
    cached = read_cached(target, key)
    if cached is not None:
        log.info("sensitivity: reusing %s", target)
        cached["cached"] = True
        return cached
    result = measure(model, train, config, dataset=dataset, identity=identity, progress=progress)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, target)
    result["cached"] = False
    return result


def load_for_model(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """A sensitivity JSON given by the user, checked to be of this very model (its key recomputed)."""
    try:
        result = json.loads(Path(path).read_text())
        config = SensitivityConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in result["settings"].items()})
        key = cache_key(model, config, result["dataset"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a netshrink sensitivity JSON ({type(exc).__name__}: {exc})") from None
    if result.get("key") != key:
        raise DataError(f"{path} was measured on another model or data set than this one; re-run "
                        "`netshrink sensitivity` on this model")
    return result


def summary_table(result: dict[str, Any]) -> str:
    """Per layer, the KL from the uncompressed model at every setting (the full record is the JSON)."""
    layers = result["layers"]
    width = max([len(layer["name"]) for layer in layers] + [5])
    heads = [f"{p['setting']}b" for p in layers[0]["bits"]] + [f"s{p['setting']:g}" for p in layers[0]["sparsity"]]
    lines = [f"KL(reference || compressed) per layer, nats, on {result['samples']} held-out training samples of "
             f"{result['dataset']} (baseline top-1 {result['baseline']['top1']:.2%})"
             + (" [cached]" if result.get("cached") else ""),
             f"{'layer':<{width}}  " + " ".join(f"{h:>8}" for h in heads)]
    for layer in layers:
        values = [p["kl"] for p in layer["bits"] + layer["sparsity"]]
        lines.append(f"{layer['name']:<{width}}  " + " ".join(f"{v:>8.4f}" for v in values))
    return "\n".join(lines)
