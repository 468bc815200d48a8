"""Compression of models larger than memory, one block at a time, from a .safetensors checkpoint
(`compress_streaming`); see `run.py` for how, `resume.py` for going on after an interruption."""

from netshrink.streaming.run import StreamResult, compress_streaming

__all__ = ["StreamResult", "compress_streaming"]
