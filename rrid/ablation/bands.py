"""Band statistics: what every head of Table 2 reads of a feature map, in an eighth of its size.

Every head of every row reads the map x (N, C, H, W) only through pooling over whole rows:

* stripe pooling (``rrid.model.stripe_pool``): GMP or GAP over the rows of each of n
  horizontal stripes (n = 2, 4, 6), all W columns;
* global pooling (``GlobalPooling``): GAP, GMP or GAP + GMP over the whole map; GCP reads the
  stripes' GMP.

Cut the H rows at every first and stop row of every stripe of every scale: the pieces between
consecutive cuts are the **bands** (:func:`band_bounds`), and every stripe and the whole map is
a union of whole bands. For a union U of bands b, each of h_b rows,

    GMP_U(x) = max_b  max_b(x)                       (exact: a max of maxima)
    GAP_U(x) = sum_b  sum_b(x) / (W sum_b h_b)       (exact up to float rounding)

so each band's maximum and sum over its h_b x W cells determine every head's input. At
384 x 128 a ResNet-50 map is 2048 x 24 x 8 (786 KB in float16). Its stripes of n = 6, 4, 2 cut
H = 24 at rows 0, 4, 6, 8, 12, 16, 18, 20, 24: 8 bands of 4, 2, 2, 4, 4, 2, 2 and 4 rows, whose
two statistics take 8 x 2 x 2048 float16 = 64 KiB, a twelfth of the map (12 equal bands of 2
rows, the finest grid that all three scales share, would take 96 KiB).

:class:`BandMap` holds the statistics of a batch of maps and answers exactly the questions the
heads ask of a map: its ``shape``, a slice of whole bands (``x[:, :, first:stop]``),
``amax(dim=(2, 3))`` and ``mean(dim=(2, 3))``. An ``RRID`` whose backbone is ``nn.Identity()``
takes it in place of x unchanged (``rrid.model`` reads x through nothing else; a test checks that
every row gives the same embeddings and losses from either). Anything else (a slice across a
band, a pooling over other dimensions) is an error, never an approximation.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from rrid.model import stripe_bounds

__all__ = ["band_bounds", "band_statistics", "BandMap"]


def band_bounds(height: int, scales: Sequence[int] = (2, 4, 6)) -> list[tuple[int, int]]:
    """(first, stop) rows of the bands of a map of ``height`` rows: the pieces between consecutive
    first and stop rows of every stripe of ``scales`` (``rrid.model.stripe_bounds``, "adaptive").
    Every stripe of those scales, and the whole map, is a union of whole bands."""
    cuts = {0, height}
    for n in scales:
        for first, stop in stripe_bounds(height, n):
            cuts.update((first, stop))
    cuts = sorted(cuts)
    return list(zip(cuts[:-1], cuts[1:]))


def band_statistics(x: Tensor, bounds: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
    """(max, sum) of every band of x (N, C, H, W) over its rows and all W columns: each (N, B, C)."""
    bands = [x[:, :, first:stop] for first, stop in bounds]
    return (torch.stack([b.amax(dim=(2, 3)) for b in bands], dim=1),
            torch.stack([b.sum(dim=(2, 3)) for b in bands], dim=1))


class BandMap:
    """A batch of feature maps known by the statistics of their bands; pooled like the maps.

    ``band_max``, ``band_sum``: (*lead, B, C), band b covering rows ``bounds[b]`` and all
    ``width`` columns. Its ``shape`` is the maps' (*lead, C, H, W). Indexing takes the leading
    dimensions as a tensor's would (``cache[view, images]``) and, after C, a slice of whole bands
    of H (``x[:, :, first:stop]``: the stripe of those rows, rows renumbered from 0).
    """

    def __init__(self, band_max: Tensor, band_sum: Tensor, bounds: Sequence[tuple[int, int]], width: int):
        if band_max.shape != band_sum.shape or band_max.ndim < 2 or band_max.shape[-2] != len(bounds):
            raise ValueError(f"BandMap: expected band_max and band_sum of one shape (..., {len(bounds)} bands, C), "
                             f"got {tuple(band_max.shape)} and {tuple(band_sum.shape)}")
        self.band_max, self.band_sum, self.width = band_max, band_sum, int(width)
        self.bounds = tuple((int(a), int(b)) for a, b in bounds)

    @classmethod
    def from_map(cls, x: Tensor, bounds: Sequence[tuple[int, int]]) -> "BandMap":
        """The band statistics of maps x (N, C, H, W); ``bounds`` must tile rows 0..H."""
        cuts = [a for a, _ in bounds] + [bounds[-1][1]]
        if cuts[0] != 0 or cuts[-1] != x.shape[2] or any(a >= b for a, b in zip(cuts, cuts[1:])) or \
                any(s != a for (_, s), (a, _) in zip(bounds, bounds[1:])):
            raise ValueError(f"BandMap.from_map: bands {list(bounds)} do not tile the {x.shape[2]} rows of the map")
        return cls(*band_statistics(x, bounds), bounds, x.shape[3])

    @property
    def shape(self) -> torch.Size:
        rows = self.bounds[-1][1] - self.bounds[0][0]
        return torch.Size((*self.band_max.shape[:-2], self.band_max.shape[-1], rows, self.width))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def device(self) -> torch.device:
        return self.band_max.device

    @property
    def dtype(self) -> torch.dtype:
        return self.band_max.dtype

    def _apply(self, fn) -> "BandMap":
        return BandMap(fn(self.band_max), fn(self.band_sum), self.bounds, self.width)

    def float(self) -> "BandMap":
        return self._apply(lambda t: t.float())

    def double(self) -> "BandMap":
        return self._apply(lambda t: t.double())

    def half(self) -> "BandMap":
        return self._apply(lambda t: t.half())

    def to(self, *args, **kwargs) -> "BandMap":
        return self._apply(lambda t: t.to(*args, **kwargs))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> "BandMap":
        key = key if isinstance(key, tuple) else (key,)
        lead = self.ndim - 3
        if any(k is Ellipsis or k is None for k in key) or len(key) > self.ndim:
            raise IndexError(f"BandMap{tuple(self.shape)}: index {key!r}: expected indices of the {lead} leading "
                             "dimensions, then ':' for C and a slice of rows")
        head, tail = key[:lead], key[lead:]
        if any(k != slice(None) for k in tail[:1] + tail[2:]):
            raise IndexError(f"BandMap: index {key!r}: only whole channels and whole columns are known (':')")
        out = self if not head else BandMap(self.band_max[head], self.band_sum[head], self.bounds, self.width)
        return out._rows(tail[1]) if len(tail) > 1 else out

    def _rows(self, rows: slice) -> "BandMap":
        """The bands of rows ``rows`` (a slice of whole bands), renumbered from row 0."""
        height = self.shape[-2]
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise IndexError(f"BandMap: rows {rows!r}: expected a slice first:stop")
        first, stop, _ = rows.indices(height)
        firsts = [a - self.bounds[0][0] for a, _ in self.bounds]
        stops = [b - self.bounds[0][0] for _, b in self.bounds]
        if first not in firsts or stop not in stops or stop <= first:
            raise IndexError(f"BandMap: rows {first}:{stop} are not a union of whole bands (bands "
                             f"{list(zip(firsts, stops))}); the statistics were cut for other stripes")
        i, j = firsts.index(first), stops.index(stop) + 1
        return BandMap(self.band_max[..., i:j, :], self.band_sum[..., i:j, :],
                       [(a - first, b - first) for a, b in zip(firsts[i:j], stops[i:j])], self.width)

    def _check_spatial(self, dim) -> None:
        dims = sorted(d % self.ndim for d in (dim if isinstance(dim, (tuple, list)) else (dim,)))
        if dims != [self.ndim - 2, self.ndim - 1]:
            raise ValueError(f"BandMap: pooling over dim={dim!r}: only the max and mean over (H, W) are known")

    def amax(self, dim) -> Tensor:
        """GMP over the rows and columns: the max of the bands' maxima, (*lead, C)."""
        self._check_spatial(dim)
        return self.band_max.amax(dim=-2)

    def mean(self, dim) -> Tensor:
        """GAP over the rows and columns: the bands' sums added, over H x W cells, (*lead, C)."""
        self._check_spatial(dim)
        return self.band_sum.sum(dim=-2) / (self.shape[-2] * self.width)

    @staticmethod
    def cat(maps: Sequence["BandMap"], dim: int = 0) -> "BandMap":
        """Band maps of the same bands joined along leading dimension ``dim`` (as ``torch.cat``)."""
        first = maps[0]
        if any(m.bounds != first.bounds or m.width != first.width for m in maps):
            raise ValueError("BandMap.cat: expected maps of the same bands and width")
        if not 0 <= dim % first.ndim < first.ndim - 3:
            raise ValueError(f"BandMap.cat: dim={dim} is not a leading dimension of {tuple(first.shape)}")
        dim = dim % first.ndim
        return BandMap(torch.cat([m.band_max for m in maps], dim), torch.cat([m.band_sum for m in maps], dim),
                       first.bounds, first.width)

    def __repr__(self) -> str:
        return f"BandMap(shape={tuple(self.shape)}, bands={list(self.bounds)}, dtype={self.dtype})"
