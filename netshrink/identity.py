"""What a .nsk header records about its model, as one typed value read and written in one place.

A header is untrusted input: `ModelIdentity.from_json` checks every field it knows before anything
uses it (a reader builds a zoo module from `name` and `arch`), so a malformed header is a one-line
`FormatError` naming the field. Fields it does not know are kept as they are, so a re-compressed
file carries them on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from netshrink.errors import FormatError

#: The largest original size a header may claim (2^48 bytes): far above any model, far below overflow.
MAX_ORIGINAL = 1 << 48


@dataclass(frozen=True)
class OriginalSize:
    """The uncompressed model, recorded before any step changes its shape, so a recipe that removes
    channels is credited against the model it started from."""

    fp32_bytes: int
    weight_numel: int  # conv/linear/embedding weights

    def to_json(self) -> dict[str, int]:
        return {"fp32_bytes": self.fp32_bytes, "weight_numel": self.weight_numel}

    @classmethod
    def from_json(cls, data: Any, source: str) -> OriginalSize:
        values = (data.get("fp32_bytes"), data.get("weight_numel")) if isinstance(data, dict) else (None, None)
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < MAX_ORIGINAL for v in values):
            raise FormatError(
                f"{source}: malformed header: model 'original' must hold non-negative integers fp32_bytes, weight_numel"
            )
        return cls(*values)


@dataclass(frozen=True)
class ModelIdentity:
    """Zoo name (None outside the zoo), class, constructor arguments that differ from the zoo default
    (`arch`), data set, original size, and any other fields a caller recorded (`extra`)."""

    name: str | None = None
    class_name: str | None = None
    arch: Mapping[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    original: OriginalSize | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The header's `model` object; empty optional fields are left out, as files have always had them."""
        out: dict[str, Any] = {"name": self.name, "class": self.class_name}
        if self.arch:
            out["arch"] = dict(self.arch)
        if self.dataset is not None:
            out["dataset"] = self.dataset
        if self.original is not None:
            out["original"] = self.original.to_json()
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "header") -> ModelIdentity:
        """The identity in a header's `model` object; a wrongly typed field is a FormatError."""
        name, class_name, dataset = (_optional_str(data, key, source) for key in ("name", "class", "dataset"))
        arch = data.get("arch") or {}  # a missing or empty arch: the zoo default
        if not isinstance(arch, dict):
            raise FormatError(f"{source}: malformed header: model 'arch' must be an object")
        original = data.get("original")
        extra = {k: v for k, v in data.items() if k not in ("name", "class", "arch", "dataset", "original")}
        return cls(
            name,
            class_name,
            arch,
            dataset,
            None if original is None else OriginalSize.from_json(original, source),
            extra,
        )

    @classmethod
    def of(cls, model: Any, name: str | None = None, dataset: str | None = None, **extra: Any) -> ModelIdentity:
        """The identity of a module in memory; a zoo model adds the constructor arguments that rebuild it."""
        from netshrink.zoo.protocols import DescribesArch

        kind = type(model)
        arch = model.arch_options() if isinstance(model, DescribesArch) else {}
        return cls(name, f"{kind.__module__}.{kind.__qualname__}", arch, dataset, None, extra)

    def with_arch(self, changes: Mapping[str, Any]) -> ModelIdentity:
        """This identity after a step changed the model's shape (merged over the recorded arch)."""
        return replace(self, arch={**self.arch, **changes}) if changes else self

    def describe(self) -> str:
        """The model in a message: its zoo name, else its class."""
        return self.name or self.class_name or "an unknown class"


def _optional_str(data: Mapping[str, Any], key: str, source: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise FormatError(f"{source}: malformed header: model {key!r} must be a string")
    return value
