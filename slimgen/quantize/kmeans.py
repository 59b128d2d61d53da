"""Pure tensor maths of weight sharing: 1-D k-means codebooks and nearest-centroid assignment."""

from __future__ import annotations

import torch


def nearest_centroid(w: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index (int64, shape of ``w``) of the nearest entry of ``codebook`` (K,) for each element."""
    order = torch.argsort(codebook)
    sorted_cb = codebook[order]
    mids = (sorted_cb[1:] + sorted_cb[:-1]) / 2  # (K-1,) decision boundaries
    pos = torch.bucketize(w.detach().float().contiguous(), mids)
    return order[pos]


def _init_centroids(flat: torch.Tensor, k: int, init: str) -> torch.Tensor:
    if init == "linear":
        return torch.linspace(float(flat.min()), float(flat.max()), k)
    if init == "density":  # evenly spaced quantiles of the weight distribution (CDF)
        return torch.quantile(flat, torch.linspace(0, 1, k + 2)[1:-1]) if flat.numel() <= 16_000_000 else \
            torch.sort(flat).values[torch.linspace(0, flat.numel() - 1, k + 2)[1:-1].long()]
    raise ValueError(f"init must be 'linear' or 'density', got {init!r}")


def _kmeans_codebook(weight: torch.Tensor, bits: int, init: str = "linear", iterations: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the values of ``weight`` (any shape) with K = 2^bits clusters.

    Returns (codebook float32 (K,), indices int64 of ``weight``'s shape). A cluster that ends
    empty keeps its previous centroid; with fewer distinct values than K the codebook is
    padded with copies (duplicates are harmless, the indices use the first).
    """
    flat = weight.detach().float().reshape(-1)
    k = 2**bits
    codebook = _init_centroids(flat, k, init).float()
    for _ in range(iterations):
        idx = nearest_centroid(flat, codebook)
        sums = torch.zeros(k).index_add_(0, idx, flat)
        counts = torch.bincount(idx, minlength=k).float()
        new = torch.where(counts > 0, sums / counts.clamp(min=1), codebook)
        if torch.equal(new, codebook):
            break
        codebook = new
    return codebook, nearest_centroid(weight, codebook)


def codebook_of(w: torch.Tensor, bits: int) -> torch.Tensor | None:
    """The distinct values of ``w`` as a codebook (K,) when there are at most 2^bits of them, else None."""
    values = torch.unique(w.detach().float())
    if values.numel() > 2**bits:
        return None
    pad = values[:1].expand(2**bits - values.numel()) if values.numel() else torch.zeros(2**bits)
    return torch.cat([values, pad])
