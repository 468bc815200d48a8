"""Size reports read from the file on disk: per tensor and in total, with the one ratio definition.

- `ratio` = original_bytes / file_bytes, where original_bytes = 4 bytes x every parameter and buffer
  element of the uncompressed model (every state-dict tensor, as the file stores them all; a tensor
  known under two names, such as a tied embedding, counted once, as the file stores it once) and
  file_bytes = os.stat size of the .nsk file.
- `weights_ratio` is the papers' convention (Han et al. 2016; Wu et al. 2018): fp32 bits of the
  conv/linear/embedding weights over the bits those weights occupy in the file. It ignores biases,
  norm parameters, buffers and the header, so it is always labelled as such.

The per-tensor bytes plus `header_bytes` add up to `file_bytes` exactly.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netshrink.decoding import DecodedFile, decode_file
from netshrink.identity import ModelIdentity, OriginalSize

if TYPE_CHECKING:
    from netshrink.energy.files import EnergySummary

WEIGHT_MODULES = {"Conv1d", "Conv2d", "Conv3d", "Linear", "Embedding"}
WEIGHTS_RATIO_LABEL = "weights_ratio (paper convention: fp32 conv/linear weights over their encoded bits only)"


@dataclass
class TensorReport:
    name: str
    module: str
    codec: str
    shape: list[int]
    numel: int
    bits_per_weight: float
    bytes: dict[str, int]
    total_bytes: int
    zeros: int = 0  # exact zeros in the decoded tensor: pruned weights, whatever codec stores them
    tied_to: str = ""  # the stored tensor this one shares (no bytes of its own, counted there)

    @property
    def is_layer_weight(self) -> bool:
        return self.module in WEIGHT_MODULES and self.name.endswith("weight") and not self.tied_to

    @property
    def sparsity(self) -> float:
        return self.zeros / self.numel if self.numel else 0.0


@dataclass
class FileReport:
    file: str
    file_bytes: int
    header_bytes: int
    original_bytes: int
    tensors: list[TensorReport]
    model: ModelIdentity = field(default_factory=ModelIdentity)
    recipe: dict[str, Any] | None = None
    original_weight_numel: int | None = None  # conv/linear weights before structural changes
    energy: EnergySummary | None = None  # estimated by `netshrink.inspect` (not by `file_report`)

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.file_bytes

    @property
    def weights_ratio(self) -> float:
        weights = [t for t in self.tensors if t.is_layer_weight]
        bits = sum(8 * t.total_bytes for t in weights)
        numel = self.original_weight_numel or sum(t.numel for t in weights)
        return 32 * numel / bits if bits else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "file_bytes": self.file_bytes,
            "header_bytes": self.header_bytes,
            "original_bytes": self.original_bytes,
            "ratio": self.ratio,
            "weights_ratio": self.weights_ratio,
            "weights_ratio_label": WEIGHTS_RATIO_LABEL,
            "model": self.model.to_json(),
            "recipe": self.recipe,
            "tensors": [asdict(t) for t in self.tensors],
            **({"energy": self.energy.to_json()} if self.energy is not None else {}),
        }

    def to_text(self) -> str:
        """The per-tensor table, then the energy estimate when there is one."""
        return self.table() + (f"\n{self.energy.text()}" if self.energy is not None else "")

    def table(self, only_weights: bool = False) -> str:
        """A readable per-tensor table with totals."""
        rows = [t for t in self.tensors if t.is_layer_weight or not only_weights]
        name_width = max([len(t.name) for t in rows] + [6])
        lines = [
            f"{'tensor':<{name_width}}  {'codec':<22} {'shape':<16} {'bits/w':>7} {'codebook':>9} "
            f"{'indices':>9} {'positions':>9} {'values':>9} {'total':>9}"
        ]
        for t in rows:
            b = t.bytes
            lines.append(
                f"{t.name:<{name_width}}  {t.codec[:22]:<22} {'x'.join(map(str, t.shape))[:16]:<16} "
                f"{t.bits_per_weight:>7.2f} {b['codebook']:>9} {b['indices']:>9} {b['positions']:>9} "
                f"{b['values']:>9} {t.total_bytes:>9}"
            )
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        return (
            f"file {self.file}: {self.file_bytes:,} bytes on disk (header {self.header_bytes:,}); "
            f"original fp32 {self.original_bytes:,} bytes; ratio {self.ratio:.2f}x; "
            f"weights_ratio {self.weights_ratio:.2f}x (paper convention, conv/linear weights only)"
        )


def tensor_reports(decoded: DecodedFile) -> list[TensorReport]:
    """Each tensor's codec and bytes, and its zeros counted on the decoded values: the sparsity a
    loaded model really has, whichever codec (sparse, or a palette with a zero entry) stores it."""
    out = []
    for rec in decoded.nsk.tensors:
        enc = rec.encoded
        kinds = enc.bytes_by_kind() if not rec.tied_to else dict.fromkeys(enc.bytes_by_kind(), 0)
        total = sum(kinds.values())
        bpw = 8 * total / enc.numel if enc.numel else 0.0
        codec = f"tied to {rec.tied_to}" if rec.tied_to else enc.describe()
        zeros = int((decoded.state[rec.name] == 0).sum())
        out.append(
            TensorReport(
                rec.name, rec.module_type, codec, list(enc.shape), enc.numel, bpw, kinds, total, zeros, rec.tied_to
            )
        )
    return out


def file_report(path: str | Path) -> FileReport:
    """Report of a .nsk file: what is in it and what it costs on disk."""
    return report_of(decode_file(path))


def report_of(decoded: DecodedFile) -> FileReport:
    """The report of a file already read and decoded (`netshrink.decoding.decode_file`)."""
    tensors = tensor_reports(decoded)
    recorded = decoded.identity.original
    original = (recorded.fp32_bytes if recorded else 0) or 4 * sum(t.numel for t in tensors if not t.tied_to)
    return FileReport(
        str(decoded.path),
        os.stat(decoded.path).st_size,
        decoded.nsk.header_bytes,
        original,
        tensors,
        decoded.identity,
        decoded.nsk.recipe,
        recorded.weight_numel if recorded else None,
    )


def original_size(model: Any) -> OriginalSize:
    """What the uncompressed model weighs: recorded in the header before any step changes its shape,
    so a recipe that removes channels is credited against the model it started from."""
    from netshrink.plan import tied_names
    from netshrink.select import WEIGHT_LAYERS

    state = model.state_dict()
    tied = tied_names(state)
    fp32_bytes = 4 * sum(t.numel() for name, t in state.items() if tied.get(name, name) == name)
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, WEIGHT_LAYERS)}
    return OriginalSize(fp32_bytes, sum(weights.values()))
