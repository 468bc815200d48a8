"""The Python API: every flow of the command line, with typed results.

    compressed = netshrink.compress(model, "oneshot-palette5")       # in memory
    report = compressed.save("model.nsk")                             # FileReport: sizes read back from disk
    model = netshrink.load("model.nsk")                               # zoo models rebuild themselves
    result = netshrink.compress("resnet20", "oneshot-palette5", output="r.nsk", evaluate=True)
    result = netshrink.compress_to_target("resnet20", ratio=8, output="r8.nsk")
    print(result.to_text()); json.dumps(result.to_json())

A model is a module, a zoo name, a .nsk file, or None (the embedded demo model), as on the command line.
"""

from netshrink.api.compressed import CompressedModel, apply_recipe
from netshrink.api.files import OpenedFile, load, open_file, read_identity, save
from netshrink.api.flows import DEFAULT_RECIPE, compress, evaluate, inspect, recipes, sensitivity, train, write_report
from netshrink.api.language import generate
from netshrink.api.models import ModelSource, default_output
from netshrink.api.results import RecipeList, ReportWritten, TrainedCheckpoint
from netshrink.api.targets import compress_to_target

__all__ = [
    "DEFAULT_RECIPE",
    "CompressedModel",
    "ModelSource",
    "OpenedFile",
    "RecipeList",
    "ReportWritten",
    "TrainedCheckpoint",
    "apply_recipe",
    "compress",
    "compress_to_target",
    "default_output",
    "evaluate",
    "generate",
    "inspect",
    "load",
    "open_file",
    "read_identity",
    "recipes",
    "save",
    "sensitivity",
    "train",
    "write_report",
]
