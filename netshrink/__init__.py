"""netshrink: make trained PyTorch networks small, and measure honestly how small.

Public API (`netshrink.api`): `compress`, `compress_to_target`, `evaluate`, `sensitivity`, `train`,
`inspect`, `load`, `save`, `load_recipe`, and `compress_streaming` (a checkpoint larger than memory,
one block at a time); errors derive from `NetshrinkError`.

Names are imported on first use (PEP 562), so `import netshrink` and the command line's argument
checks do not wait seconds for PyTorch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from netshrink.errors import NetshrinkError  # noqa: F401  (the one error class users catch; no torch)

__version__ = "0.1.0"
#: The recipe `compress` applies when given none (here, so the command line can name it without PyTorch).
DEFAULT_RECIPE = "oneshot-prune50-palette5"

#: Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        [
            "CompressedModel",
            "compress",
            "compress_to_target",
            "evaluate",
            "generate",
            "inspect",
            "load",
            "save",
            "sensitivity",
            "train",
            "write_report",
        ],
        "netshrink.api",
    ),
    "compress_streaming": "netshrink.streaming",
    "StreamResult": "netshrink.streaming",
    "ModelIdentity": "netshrink.identity",
    "Recipe": "netshrink.step",
    "load_recipe": "netshrink.recipe",
    "FileReport": "netshrink.report.sizes",
    "EvalResult": "netshrink.evaluate",
    "SensitivityResult": "netshrink.budget.curves",
    "TrainedCheckpoint": "netshrink.api",
}
__all__ = sorted([*_EXPORTS, "NetshrinkError"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'netshrink' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Keeps `netshrink.evaluate` the API function: importing the submodule of the same name
    (`netshrink/evaluate.py`) would otherwise replace the package attribute with the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
