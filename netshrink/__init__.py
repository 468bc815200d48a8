"""netshrink: make trained PyTorch networks small, and measure honestly how small.

Public API: `compress`, `save`, `load`, `inspect`, `load_recipe`; errors derive from `NetshrinkError`.
"""

from netshrink.api import CompressedModel, compress, load, save
from netshrink.errors import NetshrinkError
from netshrink.recipe import Recipe, load_recipe
from netshrink.report.sizes import FileReport, file_report as inspect

__version__ = "0.1.0"
__all__ = ["CompressedModel", "FileReport", "NetshrinkError", "Recipe", "compress", "inspect", "load",
           "load_recipe", "save"]
