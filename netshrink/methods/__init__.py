"""Compression methods, one module each. Importing this package registers their recipe steps."""

from netshrink.methods import cast, lowrank, magnitude, palette, retraining

__all__ = ["cast", "lowrank", "magnitude", "palette", "retraining"]
