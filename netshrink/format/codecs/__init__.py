"""Per-tensor codecs. Importing this package registers every codec for decoding."""

from netshrink.format.codecs.base import Codebook, Codec, Encoded, Stream, decode
from netshrink.format.codecs.dense import Dense
from netshrink.format.codecs.lowrank import LowRank
from netshrink.format.codecs.palette import Palette
from netshrink.format.codecs.pq import PQ
from netshrink.format.codecs.sparse import Sparse

__all__ = ["Codebook", "Codec", "Encoded", "Stream", "decode", "Dense", "LowRank", "Palette", "PQ", "Sparse"]
