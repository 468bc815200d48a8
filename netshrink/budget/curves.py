"""A sensitivity result as typed per-layer curves, and its one JSON reader and writer.

Measured by `netshrink.budget.sensitivity`, read by the allocator (`netshrink.budget.allocation`)
and by the HTML report, cached and passed around as a file: every reader goes through
`SensitivityResult.from_json`, so a malformed file is one `DataError` naming it. The JSON layout is
`FORMAT` (see the sensitivity module's docstring); files of that format written before these types
existed read unchanged.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from netshrink.errors import DataError
from netshrink.identity import ModelIdentity
from netshrink.paths import read_json

FORMAT = "netshrink-sensitivity/2"
AXES = ("bits", "sparsity")


@dataclass(frozen=True)
class Score:
    """How the model does on the calibration split: top-1 (fraction), mean cross-entropy, and mean
    KL(p_ref || p) from the uncompressed model's predictions (nats)."""

    top1: float
    loss: float
    kl: float


@dataclass(frozen=True)
class StoredBytes:
    """What one layer costs in the file at one setting, exactly: its bytes, and how many of them are
    codebooks (the energy model moves those differently)."""

    bytes: int
    codebook_bytes: int


@dataclass(frozen=True)
class Trial(StoredBytes):
    """One layer at one setting (palette bits, or magnitude sparsity), everything else exact: its
    score and its bytes."""

    setting: float
    top1: float
    loss: float
    kl: float


@dataclass(frozen=True)
class CombinedSize(StoredBytes):
    """The bytes of one layer pruned to `sparsity`, then its survivors palettized at `bits`."""

    sparsity: float
    bits: int


@dataclass(frozen=True)
class LayerSensitivity:
    """Every measured setting of one conv/linear weight."""

    name: str
    tensor: str
    numel: int
    fp32_bytes: int
    bits: tuple[Trial, ...]
    sparsity: tuple[Trial, ...]
    combined: tuple[CombinedSize, ...] = ()

    def curve(self, axis: str) -> tuple[Trial, ...]:
        """The trials along one axis ("bits" or "sparsity"), by setting."""
        return tuple(sorted(getattr(self, axis), key=lambda trial: trial.setting))


@dataclass(frozen=True)
class SensitivityResult:
    """Per-layer sensitivity of one model on one calibration split. `key` identifies the model's exact
    tensors, the settings and the data set, so a cached result is reused only for the same ones."""

    key: str
    model: ModelIdentity
    dataset: str
    samples: int
    settings: dict[str, Any]
    baseline: Score
    layers: tuple[LayerSensitivity, ...]
    split: str = "train-holdout"
    cached: bool = field(default=False, compare=False)  # read from a file rather than measured

    def to_json(self) -> dict[str, Any]:
        """The FORMAT object, in the order files have always had."""
        return {
            "format": FORMAT,
            "key": self.key,
            "model": self.model.to_json(),
            "dataset": self.dataset,
            "split": self.split,
            "samples": self.samples,
            "settings": self.settings,
            "baseline": asdict(self.baseline),
            "layers": [_layer_json(layer) for layer in self.layers],
            "cached": self.cached,
        }

    @classmethod
    def from_json(cls, data: Any, source: str) -> SensitivityResult:
        """The result a FORMAT object holds; anything else is a DataError naming `source`."""
        if (
            not isinstance(data, dict)
            or not str(data.get("format", "")).startswith("netshrink-sensitivity/")
            or not isinstance(data.get("layers"), list)
        ):
            raise DataError(
                f"{source} is not a `netshrink sensitivity` JSON (expected format "
                "netshrink-sensitivity/* with a 'layers' list)"
            )
        try:
            return cls(
                str(data["key"]),
                ModelIdentity.from_json(data.get("model") or {}, source),
                str(data["dataset"]),
                int(data["samples"]),
                dict(data["settings"]),
                Score(**data["baseline"]),
                tuple(_layer(layer) for layer in data["layers"]),
                str(data.get("split", "train-holdout")),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source}: malformed sensitivity JSON ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, path: str | Path) -> SensitivityResult:
        """A sensitivity JSON file (a `netshrink sensitivity -o` output or a cache entry)."""
        return replace(cls.from_json(read_json(path, "sensitivity curves"), str(path)), cached=True)

    def write(self, path: str | Path) -> None:
        """Write atomically: a cache entry is never half-written."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps({k: v for k, v in self.to_json().items() if k != "cached"}, indent=1))
        os.replace(tmp, target)

    def to_text(self) -> str:
        """Per layer, the KL from the uncompressed model at every setting (the full record is the JSON)."""
        width = max([len(layer.name) for layer in self.layers] + [5])
        first = self.layers[0] if self.layers else LayerSensitivity("", "", 0, 0, (), ())
        heads = [f"{t.setting}b" for t in first.bits] + [f"s{t.setting:g}" for t in first.sparsity]
        lines = [
            f"KL(reference || compressed) per layer, nats, on {self.samples} held-out training samples of "
            f"{self.dataset} (baseline top-1 {self.baseline.top1:.2%})" + (" [cached]" if self.cached else ""),
            f"{'layer':<{width}}  " + " ".join(f"{h:>8}" for h in heads),
        ]
        for layer in self.layers:
            values = [t.kl for t in layer.bits + layer.sparsity]
            lines.append(f"{layer.name:<{width}}  " + " ".join(f"{v:>8.4f}" for v in values))
        return "\n".join(lines)


def _layer_json(layer: LayerSensitivity) -> dict[str, Any]:
    return {
        "name": layer.name,
        "tensor": layer.tensor,
        "numel": layer.numel,
        "fp32_bytes": layer.fp32_bytes,
        **{axis: [asdict(t) for t in getattr(layer, axis)] for axis in (*AXES, "combined")},
    }


def _layer(data: dict[str, Any]) -> LayerSensitivity:
    return LayerSensitivity(
        str(data["name"]),
        str(data["tensor"]),
        int(data["numel"]),
        int(data["fp32_bytes"]),
        *(tuple(Trial(**{"codebook_bytes": 0, **point}) for point in data[axis]) for axis in AXES),
        tuple(CombinedSize(**{"codebook_bytes": 0, **point}) for point in data.get("combined", ())),
    )
