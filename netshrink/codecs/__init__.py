"""Per-tensor codecs. Importing this package registers every codec for decoding."""

from netshrink.codecs.base import Codec, Encoded, Stream, decode
from netshrink.codecs.dense import Dense
from netshrink.codecs.lowrank import LowRank
from netshrink.codecs.palette import Palette
from netshrink.codecs.pq import PQ
from netshrink.codecs.sparse import Sparse

__all__ = ["Codec", "Encoded", "Stream", "decode", "Dense", "LowRank", "Palette", "PQ", "Sparse"]
