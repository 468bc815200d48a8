"""Linear and embedding layers that run from compressed weights (`netshrink.inference.weights`).

They compute what the dense layer of the decoded file computes (up to float rounding: sums are
taken in another order) for inference only: there is no weight to train, and no backward pass.
Inputs in fp16 or bf16 are computed in fp32 (the codebook's precision) and returned in their dtype.
"""

from __future__ import annotations

import torch
from torch import nn

from netshrink.inference import kernels
from netshrink.inference.weights import CompressedWeights


class CompressedLinear(nn.Module):
    """y = x W^T + b with W kept as palette indices or PQ codes: up to `kernels.SMALL_BATCH` input
    rows read the codes directly, more rows decode W a tile of rows at a time (`netshrink.inference.kernels`)."""

    def __init__(self, weights: CompressedWeights, bias: nn.Parameter | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.bias = bias
        self.in_features, self.out_features = weights.columns, weights.rows

    @classmethod
    def replacing(cls, layer: nn.Linear, weights: CompressedWeights) -> CompressedLinear:
        """The compressed layer in the place of `layer` (its bias, the very parameter, kept)."""
        return cls(weights, layer.bias)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float().contiguous()
        if flat.shape[0] <= kernels.SMALL_BATCH:
            out = self.weights.product(flat)
        else:
            out = kernels.tiled_product(flat, self.weights.decode_rows, self.out_features)
        if self.bias is not None:
            out += self.bias.float()
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def dense_weight(self) -> torch.Tensor:
        """The weight decoded (for checks and export: the full dense matrix, which this layer avoids holding)."""
        return self.weights.decode_rows(torch.arange(self.out_features, device=self.weights.codebook.device))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class CompressedEmbedding(nn.Module):
    """A token embedding kept as codes: a lookup decodes only the rows it is asked for."""

    def __init__(self, weights: CompressedWeights, padding_idx: int | None = None) -> None:
        super().__init__()
        self.weights = weights
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = weights.rows, weights.columns

    @classmethod
    def replacing(cls, layer: nn.Embedding, weights: CompressedWeights) -> CompressedEmbedding | None:
        """The compressed layer in the place of `layer`; None for an embedding that renormalises its
        rows (`max_norm` rewrites the weight as it looks rows up): that one stays dense."""
        return None if layer.max_norm is not None else cls(weights, layer.padding_idx)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < self.num_embeddings:
            raise IndexError(f"embedding ids {int(ids.min())}..{int(ids.max())} outside 0..{self.num_embeddings - 1}")
        rows = self.weights.decode_rows(ids.reshape(-1).long())
        return rows.reshape(*ids.shape, self.embedding_dim)

    def dense_weight(self) -> torch.Tensor:
        """The table decoded (the full dense matrix, which this layer avoids holding)."""
        return self.weights.decode_rows(torch.arange(self.num_embeddings, device=self.weights.codebook.device))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
