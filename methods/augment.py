"""Source-domain intensity augmentations (MLN-net section 3.1) and pseudo-domains.

Bezier curves (source-similar) and grayscale inversion (source-dissimilar) act on images in
[0, 1]. A `PseudoDomain` is a named group of such transforms; a method built on
`PseudoDomainMethod` declares its groups and the harness feeds one domain-homogeneous batch per
group (SADN, MLN-net, DoFE and FedDG reuse this). Hand-written: no maintained library evaluates
a Bezier intensity curve exactly (torchio/MONAI offer random gamma-like curves only).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from methods.base import Batch, Method

Point = tuple[float, float]
Transform = Callable[[torch.Tensor], torch.Tensor]  # (1,H,W) image in [0,1] -> same shape


def _cubic(p0: float, p1: float, p2: float, p3: float, t: torch.Tensor) -> torch.Tensor:
    """One coordinate of a cubic Bezier at parameters t (standard Bernstein basis)."""
    u = 1.0 - t
    return u**3 * p0 + 3 * u**2 * t * p1 + 3 * u * t**2 * p2 + t**3 * p3


@dataclass(frozen=True)
class BezierCurve:
    """y = B(x) for the cubic Bezier (0,0), p1, p2, (1,1) of MLN-net Eq. 3, evaluated exactly.

    With every control coordinate in [0, 1], x(t) and y(t) are non-decreasing (their
    derivatives are non-negative combinations of the control differences), so x -> t is found by
    bisection to float64 precision and y(t) follows. This is the curve the released code samples
    at 100,000 points and interpolates (the released Bezier script); the difference is below 1e-5.
    """

    p1: Point
    p2: Point

    def __post_init__(self) -> None:
        for p in (self.p1, self.p2):
            if not all(0.0 <= c <= 1.0 for c in p):
                raise ValueError(f"Bezier control point {p} must lie in [0, 1]^2 (Eq. 4)")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Map intensities in [0, 1] (values outside are clamped first)."""
        xd = x.detach().to(torch.float64).clamp(0.0, 1.0)
        lo, hi = torch.zeros_like(xd), torch.ones_like(xd)
        for _ in range(52):  # 2^-52: float64 resolution of t
            mid = 0.5 * (lo + hi)
            below = _cubic(0.0, self.p1[0], self.p2[0], 1.0, mid) < xd
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        y = _cubic(0.0, self.p1[1], self.p2[1], 1.0, 0.5 * (lo + hi))
        return y.to(x.dtype)

    def mirror(self) -> BezierCurve:
        """The curve with its two control points swapped (S-curve <-> inverse S-curve)."""
        return BezierCurve(self.p2, self.p1)

    @property
    def label(self) -> str:
        return f"bezier({self.p1[0]:.2f},{self.p1[1]:.2f})({self.p2[0]:.2f},{self.p2[1]:.2f})"


def bezier_pair(a: float) -> list[BezierCurve]:
    """The control point pair of parameter a (paper 5.1.1): (a,1-a)/(1-a,a) and its mirror."""
    curve = BezierCurve((a, 1.0 - a), (1.0 - a, a))
    return [curve, curve.mirror()]


def bezier_curves(n_pairs: int = 1, strategy: str = "paper", seed: int = 0) -> list[BezierCurve]:
    """The source-similar curves of Fig. 8: `paper` (a = 0.30, the published setting),
    `mean` (a_n = 0.5 n / N) or `random` (a ~ U(0, 0.5), drawn once from `seed`)."""
    if n_pairs < 1:
        raise ValueError("n_pairs must be >= 1")
    if strategy == "paper":
        if n_pairs != 1:
            raise ValueError("the paper's setting is one pair (a = 0.30); use 'mean' or "
                             "'random' for more pairs")
        values = [0.30]
    elif strategy == "mean":
        values = [0.5 * n / n_pairs for n in range(1, n_pairs + 1)]
    elif strategy == "random":
        rng = np.random.default_rng(seed)
        values = [float(v) for v in rng.uniform(0.0, 0.5, n_pairs)]
    else:
        raise ValueError(f"unknown Bezier strategy '{strategy}' (paper, mean, random)")
    return [c for a in values for c in bezier_pair(a)]


@dataclass(frozen=True)
class Inversion:
    """Grayscale inversion g = T - f (MLN-net Eq. 5) on images in [0, 1].

    `peak="range"` uses T = 1, the top of the value range, as the released code's 255 - x does;
    `peak="image"` uses T = the image's own maximum, the literal reading of Eq. 5. The MLN code
    leaves the background inverted (black becomes white, as released: `background="invert"`);
    SADN restores it (`background="keep"`: pixels at the image minimum stay at 0).
    """

    peak: str = "range"
    background: str = "invert"

    def __post_init__(self) -> None:
        if self.peak not in ("range", "image"):
            raise ValueError(f"inversion peak must be 'range' or 'image', not '{self.peak}'")
        if self.background not in ("invert", "keep"):
            raise ValueError("inversion background must be 'invert' or 'keep', "
                             f"not '{self.background}'")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        top = x.amax(dim=(-2, -1), keepdim=True) if self.peak == "image" else torch.ones_like(x)
        out = top - x
        if self.background == "keep":
            floor = x.amin(dim=(-2, -1), keepdim=True)
            out = torch.where(x <= floor, torch.zeros_like(out), out)
        return out

    @property
    def label(self) -> str:
        return f"invert(T={self.peak},bg={self.background})"


def identity(x: torch.Tensor) -> torch.Tensor:
    """The untransformed source image."""
    return x


def compose(*fs: Transform) -> Transform:
    """f_n(...f_1(x)): transforms applied left to right."""
    def composed(x: torch.Tensor) -> torch.Tensor:
        for f in fs:
            x = f(x)
        return x
    return composed


@dataclass(frozen=True)
class PseudoDomain:
    """A named group of intensity transforms standing for one unseen domain.

    Each sample of a group's batch gets one of the group's transforms, drawn uniformly from the
    harness generator (a pooled folder of offline-augmented copies, as the MLN and SADN code
    build, seen one random copy per step); masks are unchanged.
    """

    name: str
    transforms: tuple[Transform, ...]

    def apply(self, batch: Batch, gen: torch.Generator) -> Batch:
        """The group's view of a source batch."""
        images = batch["image"]
        if len(self.transforms) == 1:
            out = self.transforms[0](images)
        else:
            picks = torch.randint(0, len(self.transforms), (images.shape[0],), generator=gen)
            out = torch.stack([self.transforms[int(k)](images[i]) for i, k in enumerate(picks)])
        return {**batch, "image": out.to(images.dtype)}


def similar_dissimilar(curves: Sequence[BezierCurve], inversion: Inversion,
                       include_identity: bool = True) -> list[PseudoDomain]:
    """MLN-net's two groups: source-similar (original + Bezier copies) and source-dissimilar
    (the grayscale inversion of every source-similar copy: the released `image_512_trans_sum`)."""
    similar: list[Transform] = ([identity] if include_identity else []) + list(curves)
    dissimilar = [compose(f, inversion) for f in similar]
    return [PseudoDomain("similar", tuple(similar)), PseudoDomain("dissimilar", tuple(dissimilar))]


class PseudoDomainMethod(Method):
    """A method trained on pseudo-domains built from the single source.

    Subclasses implement `pseudo_domains()`; the harness asks `training_groups()` for their
    names and calls `make_view` to get each group's batch of the same source images.
    """

    @abc.abstractmethod
    def pseudo_domains(self) -> list[PseudoDomain]:
        """The groups, in the order `update` processes them."""

    def _domains(self) -> dict[str, PseudoDomain]:
        cached = self.__dict__.get("_pseudo_domain_map")
        if cached is None:
            cached = {d.name: d for d in self.pseudo_domains()}
            self.__dict__["_pseudo_domain_map"] = cached
        return cached

    def training_groups(self) -> list[str]:
        return list(self._domains())

    def make_view(self, group: str, batch: Batch, gen: torch.Generator) -> Batch:
        return self._domains()[group].apply(batch, gen)
