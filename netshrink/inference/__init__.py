"""Running a model from its compressed form: `netshrink.load(path, keep_compressed=True)`.

The weights of `nn.Linear` and `nn.Embedding` layers coded by a palette or PQ (at most 256 values)
stay as their indices and codebook (`weights`), and the layers compute from them
(`compressed_linear`, `kernels`): the loaded model takes about the file's size in memory instead of
4 bytes a weight, and one token of generation reads 4 or 8 bits a weight instead of 32. Which
records stay compressed, and why the others (sparse among them) do not: `keep`.
"""

from netshrink.inference.compressed_linear import CompressedEmbedding, CompressedLinear
from netshrink.inference.keep import KeepCompressed
from netshrink.inference.weights import PaletteWeights, PQWeights

__all__ = ["CompressedEmbedding", "CompressedLinear", "KeepCompressed", "PaletteWeights", "PQWeights"]
