"""Analytic surface primitives with exact normals and exact area-uniform samplers.

Long module: one catalogue of small primitive classes (the smooth ones and the CAD-like
prisms) that share the sampling machinery; splitting it would scatter the catalogue.

Every primitive is described in its canonical pose (centred near the origin, size about 1) in
float64 numpy. Sampling is exact rejection sampling: ``propose(rng, m)`` draws ``m`` i.i.d.
candidates from a simple proposal together with an acceptance probability such that the
accepted points are distributed with density proportional to the surface area element.
``proposal_mass`` is the total mass of that (unnormalised) proposal, so a mixture of primitives
chosen in proportion to ``proposal_mass`` and thinned by the acceptance probabilities samples the
union of the surfaces area-uniformly, without ever needing the (possibly non-elementary) areas.

Normals are exact: gradients of the implicit equations, outward for closed surfaces.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .._math import haar_orthogonal_np

TAU = 2.0 * math.pi

#: ``propose`` result: ``(points (m, 3), normals (m, 3), part (m,), acceptance (m,))``.
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
#: Sampled surface: ``(points (n, 3), normals (n, 3), part (n,))``.
Samples = tuple[np.ndarray, np.ndarray, np.ndarray]
#: Optional extra acceptance: ``accept(points) -> probabilities``.
Accept = Callable[[np.ndarray], np.ndarray]
_FaceSampler = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def _unit_sphere(rng: np.random.Generator, m: int) -> np.ndarray:
    v = rng.standard_normal((m, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


class Primitive:
    """Base class. Subclasses set ``closed``, ``proposal_mass`` and ``radius`` (an upper bound
    of ``|p|`` over the surface) and implement :meth:`propose` (and :meth:`inside` if closed)."""

    name = "primitive"
    closed = True
    proposal_mass: float
    radius: float

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        """``m`` i.i.d. candidates: ``(points (m, 3), normals (m, 3), part (m,), accept (m,))``."""
        raise NotImplementedError

    def inside(self, p: np.ndarray) -> np.ndarray:
        """Boolean mask: ``p`` strictly inside the closed volume."""
        raise NotImplementedError(f"{self.name} is an open surface: it has no inside")

    def sample(self, rng: np.random.Generator, n: int, accept: Accept | None = None
               ) -> Samples:
        """``n`` area-uniform samples (thinned by ``accept(p) -> prob`` if given)."""
        return sample_surface(self, rng, n, accept)


def sample_surface(shape: Primitive, rng: np.random.Generator, n: int,
                   accept: Accept | None = None) -> Samples:
    """Exact rejection sampler: returns ``(points, normals, part)`` with ``n`` rows, i.i.d. from
    the area measure of ``shape`` (times the optional acceptance function ``accept``)."""
    ps, ns, ks = [], [], []
    have, tried, kept = 0, 0, 0
    for _ in range(10_000):
        if have >= n:
            break
        need = n - have
        rate = max(kept / tried, 1e-3) if tried else 0.5
        m = min(int(need / rate * 1.2) + 64, 4_000_000)
        p, nrm, part, acc = shape.propose(rng, m)
        keep = rng.random(m) < acc
        if accept is not None:
            keep &= rng.random(m) < accept(p)
        tried += m
        kept += int(keep.sum())
        ps.append(p[keep])
        ns.append(nrm[keep])
        ks.append(part[keep])
        have += int(keep.sum())
    else:  # pragma: no cover - only reached for a degenerate shape
        raise RuntimeError(f"rejection sampling of {shape.name} did not converge")
    return (
        np.concatenate(ps)[:n],
        np.concatenate(ns)[:n],
        np.concatenate(ks)[:n],
    )


def _mixture(rng: np.random.Generator, m: int, masses: Sequence[float] | np.ndarray,
             samplers: Sequence[_FaceSampler]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick each of ``m`` candidates' face in proportion to ``masses`` (i.i.d.)."""
    masses = np.asarray(masses, dtype=np.float64)
    face = rng.choice(len(masses), size=m, p=masses / masses.sum())
    p = np.empty((m, 3))
    nrm = np.empty((m, 3))
    for k, fn in enumerate(samplers):
        sel = np.flatnonzero(face == k)
        p[sel], nrm[sel] = fn(rng, sel.size)
    return p, nrm, face


# ------------------------------------------------------------------------------ primitives
class Ellipsoid(Primitive):
    r"""Ellipsoid :math:`\sum_i (p_i / a_i)^2 = 1`. Proposal: uniform directions ``u`` mapped to
    ``p = A u``; area element ``abc |A^{-1} u|`` per unit solid angle, thinned by its maximum."""

    name = "ellipsoid"

    def __init__(self, axes: Sequence[float] | np.ndarray) -> None:
        self.axes = np.asarray(axes, dtype=np.float64).reshape(3)
        if np.any(self.axes <= 0):
            raise ValueError(f"ellipsoid axes must be positive, got {self.axes}")
        a = self.axes
        self._bound = np.prod(a) / a.min()
        self.proposal_mass = 2 * TAU * self._bound
        self.radius = float(a.max())

    @classmethod
    def random(cls, rng: np.random.Generator) -> Ellipsoid:
        return cls(rng.uniform(0.4, 1.0, 3))

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        u = _unit_sphere(rng, m)
        g = u / self.axes  # A^{-1} u, parallel to the gradient of F at p = A u
        gn = np.linalg.norm(g, axis=1)
        acc = np.prod(self.axes) * gn / self._bound
        return u * self.axes, g / gn[:, None], np.zeros(m, np.int64), acc

    def inside(self, p: np.ndarray) -> np.ndarray:
        return (((p / self.axes) ** 2).sum(-1)) < 1.0


class Torus(Primitive):
    r"""Torus :math:`(\sqrt{x^2+y^2} - R)^2 + z^2 = r^2` around the z axis, ``R > r``.
    Area element ``r (R + r cos(theta))`` in the angles, thinned by its maximum."""

    name = "torus"

    def __init__(self, R: float, r: float) -> None:
        if not 0 < r < R:
            raise ValueError(f"torus needs 0 < r < R, got R={R}, r={r}")
        self.R, self.r = float(R), float(r)
        self.proposal_mass = TAU * TAU * self.r * (self.R + self.r)
        self.radius = self.R + self.r

    @classmethod
    def random(cls, rng: np.random.Generator) -> Torus:
        R = rng.uniform(0.55, 0.8)
        return cls(R, R * rng.uniform(0.2, 0.6))

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        th, ph = rng.uniform(0, TAU, (2, m))
        ct, st, cp, sp = np.cos(th), np.sin(th), np.cos(ph), np.sin(ph)
        nrm = np.stack([ct * cp, ct * sp, st], -1)
        rho = self.R + self.r * ct
        p = np.stack([rho * cp, rho * sp, self.r * st], -1)
        return p, nrm, np.zeros(m, np.int64), rho / (self.R + self.r)

    def inside(self, p: np.ndarray) -> np.ndarray:
        rho = np.hypot(p[:, 0], p[:, 1])
        return (rho - self.R) ** 2 + p[:, 2] ** 2 < self.r**2


class Superquadric(Primitive):
    r"""Superellipsoid :math:`G(p) = (|x/a|^{2/e_2} + |y/b|^{2/e_2})^{e_2/e_1} + |z/c|^{2/e_1} = 1`
    with ``0 < e1, e2 < 2`` (convex, C^1). Normals are the normalised gradient of ``G``.

    ``G`` is homogeneous of degree ``k = 2/e1``, so the radial point in direction ``u`` is
    ``p = G(u)^{-1/k} u`` and the area element per unit solid angle is ``r^3 |grad G(p)| / k``
    (``= r^2 / (u . n)``), bounded by ``r_max^3 / h_min`` with ``r_max = |(a, b, c)|`` and
    ``h_min`` the inradius of the inscribed octahedron; candidates are thinned by that bound."""

    name = "superquadric"

    def __init__(self, axes: Sequence[float] | np.ndarray, e1: float, e2: float) -> None:
        self.axes = np.asarray(axes, dtype=np.float64).reshape(3)
        if np.any(self.axes <= 0) or not (0 < e1 < 2 and 0 < e2 < 2):
            raise ValueError(f"need positive axes and 0 < e1, e2 < 2, got {self.axes}, {e1}, {e2}")
        self.e1, self.e2 = float(e1), float(e2)
        r_max = float(np.linalg.norm(self.axes))
        h_min = 1.0 / float(np.sqrt((1.0 / self.axes**2).sum()))
        self._bound = r_max**3 / h_min
        self.proposal_mass = 2 * TAU * self._bound
        self.radius = r_max

    @classmethod
    def random(cls, rng: np.random.Generator) -> Superquadric:
        return cls(rng.uniform(0.4, 1.0, 3), rng.uniform(0.3, 1.8), rng.uniform(0.3, 1.8))

    def G(self, p: np.ndarray) -> np.ndarray:
        q1, q2 = 2.0 / self.e1, 2.0 / self.e2
        s = np.abs(p / self.axes)
        return (s[:, 0] ** q2 + s[:, 1] ** q2) ** (self.e2 / self.e1) + s[:, 2] ** q1

    def grad_G(self, p: np.ndarray) -> np.ndarray:
        q1, q2 = 2.0 / self.e1, 2.0 / self.e2
        a = self.axes
        s = np.abs(p / a)
        sg = np.sign(p)
        S = s[:, 0] ** q2 + s[:, 1] ** q2
        with np.errstate(divide="ignore", invalid="ignore"):
            outer = np.where(S > 0, (self.e2 / self.e1) * S ** (self.e2 / self.e1 - 1.0), 0.0)
        gx = outer * q2 * s[:, 0] ** (q2 - 1) * sg[:, 0] / a[0]
        gy = outer * q2 * s[:, 1] ** (q2 - 1) * sg[:, 1] / a[1]
        gz = q1 * s[:, 2] ** (q1 - 1) * sg[:, 2] / a[2]
        return np.stack([gx, gy, gz], -1)

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        u = _unit_sphere(rng, m)
        r = self.G(u) ** (-self.e1 / 2.0)
        p = u * r[:, None]
        g = self.grad_G(p)
        gn = np.linalg.norm(g, axis=1)
        w = r**3 * gn * (self.e1 / 2.0)
        return p, g / gn[:, None], np.zeros(m, np.int64), w / self._bound

    def inside(self, p: np.ndarray) -> np.ndarray:
        return self.G(p) < 1.0


class Cylinder(Primitive):
    """Closed cylinder of radius ``r`` and height ``h`` around the z axis, ``|z| <= h/2``, with
    both caps. Side, top and bottom are chosen in proportion to their areas."""

    name = "cylinder"

    def __init__(self, r: float, h: float, *, caps: bool = True) -> None:
        if r <= 0 or h <= 0:
            raise ValueError(f"cylinder needs r, h > 0, got {r}, {h}")
        self.r, self.h, self.caps = float(r), float(h), bool(caps)
        self.closed = self.caps
        self._masses = [TAU * r * h] + ([math.pi * r * r] * 2 if caps else [])
        self.proposal_mass = float(sum(self._masses))
        self.radius = math.hypot(r, h / 2)

    @classmethod
    def random(cls, rng: np.random.Generator) -> Cylinder:
        return cls(rng.uniform(0.3, 0.8), rng.uniform(0.6, 2.0))

    def _side(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        ph = rng.uniform(0, TAU, m)
        z = rng.uniform(-self.h / 2, self.h / 2, m)
        nrm = np.stack([np.cos(ph), np.sin(ph), np.zeros(m)], -1)
        return nrm * self.r + np.stack([0 * z, 0 * z, z], -1), nrm

    def _cap(self, sign: float) -> _FaceSampler:
        def fn(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
            rho = self.r * np.sqrt(rng.random(m))
            ph = rng.uniform(0, TAU, m)
            p = np.stack([rho * np.cos(ph), rho * np.sin(ph), np.full(m, sign * self.h / 2)], -1)
            return p, np.tile([0.0, 0.0, sign], (m, 1))

        return fn

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        samplers = [self._side] + ([self._cap(1.0), self._cap(-1.0)] if self.caps else [])
        p, nrm, _ = _mixture(rng, m, self._masses, samplers)
        return p, nrm, np.zeros(m, np.int64), np.ones(m)

    def inside(self, p: np.ndarray) -> np.ndarray:
        if not self.caps:
            return super().inside(p)
        return (np.hypot(p[:, 0], p[:, 1]) < self.r) & (np.abs(p[:, 2]) < self.h / 2)


class OpenCylinder(Cylinder):
    """The side of a cylinder without caps (an open surface); normals point away from the
    axis."""

    name = "open_cylinder"
    closed = False

    def __init__(self, r: float, h: float) -> None:
        super().__init__(r, h, caps=False)


class Cone(Primitive):
    """Closed right circular cone: base disk of radius ``r`` at ``z = -h/3`` (normal ``-z``),
    apex at ``z = 2h/3``. Lateral surface sampled with slant distance ``t = s sqrt(U)`` from the
    apex (area element proportional to ``t``); normals ``(h cos(phi), h sin(phi), r) / s``."""

    name = "cone"

    def __init__(self, r: float, h: float) -> None:
        if r <= 0 or h <= 0:
            raise ValueError(f"cone needs r, h > 0, got {r}, {h}")
        self.r, self.h = float(r), float(h)
        self.s = math.hypot(r, h)
        self.z0 = -self.h / 3.0
        self._masses = [math.pi * r * self.s, math.pi * r * r]
        self.proposal_mass = float(sum(self._masses))
        self.radius = max(math.hypot(r, h / 3), 2 * h / 3)

    @classmethod
    def random(cls, rng: np.random.Generator) -> Cone:
        return cls(rng.uniform(0.3, 0.8), rng.uniform(0.6, 1.8))

    def _lateral(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        t = self.s * np.sqrt(rng.random(m))
        ph = rng.uniform(0, TAU, m)
        rho = self.r * t / self.s
        z = self.z0 + self.h * (1.0 - t / self.s)
        p = np.stack([rho * np.cos(ph), rho * np.sin(ph), z], -1)
        nrm = np.stack([self.h * np.cos(ph), self.h * np.sin(ph), np.full(m, self.r)], -1)
        return p, nrm / self.s

    def _base(self, rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
        rho = self.r * np.sqrt(rng.random(m))
        ph = rng.uniform(0, TAU, m)
        p = np.stack([rho * np.cos(ph), rho * np.sin(ph), np.full(m, self.z0)], -1)
        return p, np.tile([0.0, 0.0, -1.0], (m, 1))

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        p, nrm, _ = _mixture(rng, m, self._masses, [self._lateral, self._base])
        return p, nrm, np.zeros(m, np.int64), np.ones(m)

    def inside(self, p: np.ndarray) -> np.ndarray:
        z = p[:, 2] - self.z0
        rho = np.hypot(p[:, 0], p[:, 1])
        return (z > 0) & (z < self.h) & (rho < self.r * (1.0 - z / self.h))


class Box(Primitive):
    """Axis-aligned box ``|p_i| <= half_i`` with sharp edges; faces chosen by area."""

    name = "box"

    def __init__(self, half: Sequence[float] | np.ndarray) -> None:
        self.half = np.asarray(half, dtype=np.float64).reshape(3)
        if np.any(self.half <= 0):
            raise ValueError(f"box half extents must be positive, got {self.half}")
        a = self.half
        face_area = 4.0 * np.array([a[1] * a[2], a[0] * a[2], a[0] * a[1]])
        self.face_areas = np.repeat(face_area, 2)  # faces +x, -x, +y, -y, +z, -z
        self.proposal_mass = float(self.face_areas.sum())
        self.radius = float(np.linalg.norm(a))

    @classmethod
    def random(cls, rng: np.random.Generator) -> Box:
        return cls(rng.uniform(0.2, 1.0, 3))

    def _face(self, axis: int, sign: float) -> _FaceSampler:
        def fn(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray]:
            p = rng.uniform(-1.0, 1.0, (m, 3)) * self.half
            p[:, axis] = sign * self.half[axis]
            nrm = np.zeros((m, 3))
            nrm[:, axis] = sign
            return p, nrm

        return fn

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        samplers = [self._face(ax, sg) for ax in range(3) for sg in (1.0, -1.0)]
        p, nrm, _ = _mixture(rng, m, self.face_areas, samplers)
        return p, nrm, np.zeros(m, np.int64), np.ones(m)

    def inside(self, p: np.ndarray) -> np.ndarray:
        return np.all(np.abs(p) < self.half, axis=-1)


class Paraboloid(Primitive):
    r"""Open patch of the graph :math:`z = (k_1 x^2 + k_2 y^2) / 2` over the disk
    ``x^2 + y^2 <= rho^2`` (elliptic for ``k1 k2 > 0``, a saddle for ``k1 k2 < 0``). Area
    element ``sqrt(1 + k1^2 x^2 + k2^2 y^2)``, thinned by its maximum on the disk. Normals
    ``(-k1 x, -k2 y, 1) / norm`` (the +z side; an open surface has no outside)."""

    name = "paraboloid"
    closed = False

    def __init__(self, k1: float, k2: float, rho: float = 1.0) -> None:
        if rho <= 0:
            raise ValueError(f"patch radius must be positive, got {rho}")
        self.k1, self.k2, self.rho = float(k1), float(k2), float(rho)
        self._bound = math.sqrt(1.0 + max(k1 * k1, k2 * k2) * rho * rho)
        self.proposal_mass = math.pi * rho * rho * self._bound
        zmax = 0.5 * max(abs(k1), abs(k2)) * rho * rho
        self.radius = math.hypot(rho, zmax)

    @classmethod
    def random(cls, rng: np.random.Generator) -> Paraboloid:
        return cls(rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.5))

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        rad = self.rho * np.sqrt(rng.random(m))
        ph = rng.uniform(0, TAU, m)
        x, y = rad * np.cos(ph), rad * np.sin(ph)
        z = 0.5 * (self.k1 * x * x + self.k2 * y * y)
        g = np.stack([-self.k1 * x, -self.k2 * y, np.ones(m)], -1)
        gn = np.linalg.norm(g, axis=1)
        return np.stack([x, y, z], -1), g / gn[:, None], np.zeros(m, np.int64), gn / self._bound


class Saddle(Paraboloid):
    """Hyperbolic paraboloid patch (``k1 > 0 > k2``); see :class:`Paraboloid`."""

    name = "saddle"

    @classmethod
    def random(cls, rng: np.random.Generator) -> Saddle:
        return cls(rng.uniform(0.3, 1.5), -rng.uniform(0.3, 1.5))


class Placed:
    """A primitive moved rigidly: ``p -> R p + t`` (``R`` in SO(3))."""

    def __init__(self, shape: Primitive, R: np.ndarray, t: np.ndarray) -> None:
        self.shape, self.R, self.t = shape, np.asarray(R, float), np.asarray(t, float)

    def to_world(self, p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return p @ self.R.T + self.t, n @ self.R.T

    def inside(self, p: np.ndarray) -> np.ndarray:
        return self.shape.inside((p - self.t) @ self.R)


class Union(Primitive):
    """Union of 2-3 closed primitives, each rigidly placed. Only the visible boundary is
    sampled: candidates of one part that lie strictly inside another part's volume are
    rejected, so points are area-uniform on the union's surface and each point's normal is the
    exact (outward) normal of the part it was sampled from. ``part`` says which part."""

    name = "union"

    def __init__(self, parts: list[Placed]) -> None:
        if not parts:
            raise ValueError("a union needs at least one part")
        for pl in parts:
            if not pl.shape.closed:
                raise ValueError(f"union parts must be closed surfaces, got {pl.shape.name}")
        self.parts = list(parts)
        self._masses = np.array([pl.shape.proposal_mass for pl in parts])
        self.proposal_mass = float(self._masses.sum())
        self.radius = max(float(np.linalg.norm(pl.t)) + pl.shape.radius for pl in parts)

    @classmethod
    def random(cls, rng: np.random.Generator,
               catalogue: Sequence[type[Primitive]] | None = None) -> Union:
        catalogue = catalogue or CLOSED_PRIMITIVES
        k = int(rng.integers(2, 4))
        parts = []
        for i in range(k):
            shape = catalogue[int(rng.integers(len(catalogue)))].random(rng)
            R = haar_orthogonal_np(rng, 3, det=1)
            t = np.zeros(3) if i == 0 else rng.uniform(-0.5, 0.5, 3)
            parts.append(Placed(shape, R, t))
        return cls(parts)

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        part = rng.choice(len(self.parts), size=m, p=self._masses / self._masses.sum())
        p = np.empty((m, 3))
        nrm = np.empty((m, 3))
        acc = np.empty(m)
        for k, pl in enumerate(self.parts):
            sel = np.flatnonzero(part == k)
            pk, nk, _, ak = pl.shape.propose(rng, sel.size)
            p[sel], nrm[sel] = pl.to_world(pk, nk)
            acc[sel] = ak
        for k, pl in enumerate(self.parts):
            others = part != k
            acc[others & pl.inside(p)] = 0.0
        return p, nrm, part, acc

    def inside(self, p: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(p), dtype=bool)
        for pl in self.parts:
            mask |= pl.inside(p)
        return mask


class Cube(Box):
    """Cube of half edge ``a`` (a :class:`Box` with equal sides: exact symmetries)."""

    name = "cube"

    def __init__(self, a: float) -> None:
        super().__init__([a, a, a])

    @classmethod
    def random(cls, rng: np.random.Generator) -> Cube:
        return cls(rng.uniform(0.4, 0.8))


def _ring_area(ring: np.ndarray) -> float:
    """Signed (shoelace) area of a closed polygon ``(k, 2)``; positive counter-clockwise."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _in_ring(p: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Even-odd test: ``p`` ``(m, 2)`` strictly inside the polygon ``ring`` (boundary: either)."""
    x, y = p[:, :1], p[:, 1:]
    a, b = ring[None], np.roll(ring, -1, 0)[None]
    cross = (a[..., 1] > y) != (b[..., 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = a[..., 0] + (y - a[..., 1]) * (b[..., 0] - a[..., 0]) / (b[..., 1] - a[..., 1])
    return (np.count_nonzero(cross & (x < xi), axis=1) % 2) == 1


class Prism(Primitive):
    """Right prism ``|z| <= h/2`` over a planar region: a simple polygon ``outer`` ``(k, 2)``
    minus optional polygonal ``holes`` and an optional round hole of radius ``bore`` about the
    z axis (inside the polygon). Flat faces with exact normals: every polygon edge gives a side
    rectangle (normal pointing out of the solid: away from the region at the outer boundary,
    into the hole at a hole), a round hole gives a cylinder (normals towards the axis), and
    the two caps (normals ``+-z``). Sides are chosen by area; each cap is proposed uniformly
    on the region's bounding rectangle (mass = its area) and kept inside the region only, so
    the union of all faces is sampled area-uniformly."""

    name = "prism"

    def __init__(self, outer: np.ndarray | Sequence, h: float, *,
                 holes: Sequence[np.ndarray] = (), bore: float = 0.0) -> None:
        outer = np.asarray(outer, dtype=np.float64).reshape(-1, 2)
        if h <= 0 or len(outer) < 3 or bore < 0:
            raise ValueError(f"prism needs a polygon of >= 3 vertices, h > 0 and bore >= 0, "
                             f"got {len(outer)} vertices, h={h}, bore={bore}")
        self.h, self.bore = float(h), float(bore)
        # outer ring counter-clockwise, holes clockwise: the solid is on the left of every edge
        self.outer = outer if _ring_area(outer) > 0 else outer[::-1]
        self.holes = [np.asarray(r, float) if _ring_area(np.asarray(r, float)) < 0
                      else np.asarray(r, float)[::-1] for r in holes]
        rings = [self.outer] + self.holes
        a = np.concatenate([r for r in rings])
        b = np.concatenate([np.roll(r, -1, 0) for r in rings])
        self._a, self._edge = a, b - a
        lens = np.linalg.norm(self._edge, axis=1)
        self._en = np.stack([self._edge[:, 1], -self._edge[:, 0]], -1) / lens[:, None]
        self._lo, self._hi = self.outer.min(0), self.outer.max(0)
        box = float(np.prod(self._hi - self._lo))
        self._masses = np.concatenate([lens * h, [TAU * bore * h] if bore > 0 else [],
                                       [box, box]])
        self.cap_area = abs(_ring_area(self.outer)) - sum(abs(_ring_area(r)) for r in
                                                          self.holes) - math.pi * bore ** 2
        self.proposal_mass = float(self._masses.sum())
        self.area = float(self._masses[:-2].sum() + 2 * self.cap_area)
        self.radius = float(np.hypot(np.linalg.norm(self.outer, axis=1).max(), h / 2))

    def in_region(self, q: np.ndarray) -> np.ndarray:
        """``q`` ``(m, 2)`` inside the cross-section (outer polygon minus the holes)."""
        ok = _in_ring(q, self.outer)
        for r in self.holes:
            ok &= ~_in_ring(q, r)
        if self.bore > 0:
            ok &= np.hypot(q[:, 0], q[:, 1]) > self.bore
        return ok

    def propose(self, rng: np.random.Generator, m: int) -> Candidates:
        ne = len(self._a)
        face = rng.choice(len(self._masses), size=m, p=self._masses / self._masses.sum())
        p, nrm, acc = np.empty((m, 3)), np.zeros((m, 3)), np.ones(m)
        side = np.flatnonzero(face < ne)
        f = face[side]
        t = rng.random(side.size)[:, None]
        p[side, :2] = self._a[f] + t * self._edge[f]
        p[side, 2] = rng.uniform(-self.h / 2, self.h / 2, side.size)
        nrm[side, :2] = self._en[f]
        if self.bore > 0:
            sel = np.flatnonzero(face == ne)
            ph = rng.uniform(0, TAU, sel.size)
            c, s_ = np.cos(ph), np.sin(ph)
            p[sel] = np.stack([self.bore * c, self.bore * s_,
                               rng.uniform(-self.h / 2, self.h / 2, sel.size)], -1)
            nrm[sel, 0], nrm[sel, 1] = -c, -s_
        for k, sign in ((len(self._masses) - 2, 1.0), (len(self._masses) - 1, -1.0)):
            sel = np.flatnonzero(face == k)
            q = self._lo + rng.random((sel.size, 2)) * (self._hi - self._lo)
            p[sel, :2], p[sel, 2] = q, sign * self.h / 2
            nrm[sel, 2] = sign
            acc[sel] = self.in_region(q)
        return p, nrm, np.zeros(m, np.int64), acc

    def inside(self, p: np.ndarray) -> np.ndarray:
        return (np.abs(p[:, 2]) < self.h / 2) & self.in_region(p[:, :2])


def _hexagon(R: float) -> np.ndarray:
    ang = np.arange(6) * (TAU / 6)
    return R * np.stack([np.cos(ang), np.sin(ang)], -1)


class HexPrism(Prism):
    """Hexagonal prism (circumradius ``R``, height ``h``) with a round through hole of radius
    ``bore`` on its axis: a nut without thread (flat faces, exact 12-fold symmetries)."""

    name = "hex_prism"

    def __init__(self, R: float, h: float, bore: float) -> None:
        if not 0 < bore < R * math.sqrt(3) / 2:
            raise ValueError(f"hex_prism needs 0 < bore < the inradius {R * math.sqrt(3) / 2}, "
                             f"got {bore}")
        super().__init__(_hexagon(R), h, bore=bore)

    @classmethod
    def random(cls, rng: np.random.Generator) -> HexPrism:
        R = rng.uniform(0.6, 0.9)
        return cls(R, R * rng.uniform(0.4, 1.0), R * rng.uniform(0.3, 0.6))


class SlottedBox(Prism):
    """Box ``w x d x h`` with a straight slot of width ``s`` and depth ``t`` cut into one side
    through the whole height (a U-shaped cross-section): concave edges and parallel faces."""

    name = "slotted_box"

    def __init__(self, w: float, d: float, h: float, s: float, t: float) -> None:
        if not (0 < s < w and 0 < t < d and h > 0):
            raise ValueError(f"slotted_box needs 0 < s < w, 0 < t < d, h > 0, got "
                             f"w={w}, d={d}, h={h}, s={s}, t={t}")
        x, y = w / 2, d / 2
        poly = [(-x, -y), (x, -y), (x, y), (s / 2, y), (s / 2, y - t), (-s / 2, y - t),
                (-s / 2, y), (-x, y)]
        super().__init__(poly, h)

    @classmethod
    def random(cls, rng: np.random.Generator) -> SlottedBox:
        w, d = rng.uniform(1.0, 1.6), rng.uniform(0.6, 1.2)
        return cls(w, d, rng.uniform(0.4, 1.0), w * rng.uniform(0.2, 0.5),
                   d * rng.uniform(0.3, 0.7))


CLOSED_PRIMITIVES = (Ellipsoid, Torus, Superquadric, Cylinder, Cone, Box)

#: Shape catalogue of :class:`~tensorframes.data.SyntheticShapes`, name -> class; the label
#: ``y`` of a cloud is the index of its name in this tuple's order.
CATALOGUE: dict[str, type] = {
    "ellipsoid": Ellipsoid,
    "torus": Torus,
    "superquadric": Superquadric,
    "cylinder": Cylinder,
    "cone": Cone,
    "box": Box,
    "paraboloid": Paraboloid,
    "saddle": Saddle,
    "open_cylinder": OpenCylinder,
    "union": Union,
}

#: CAD-like shapes (flat faces, sharp edges, exact symmetries), drawn only when named in
#: ``SyntheticShapes(shapes=...)``; ``"cylinder"`` (flat caps) is in :data:`CATALOGUE`.
CAD_CATALOGUE: dict[str, type] = {
    "cube": Cube,
    "hex_prism": HexPrism,
    "slotted_box": SlottedBox,
}
