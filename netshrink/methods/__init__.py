"""Compression methods, one module each. Importing this package registers their recipe steps."""

from netshrink.methods import cast, lowrank, magnitude, palette

__all__ = ["cast", "lowrank", "magnitude", "palette"]
