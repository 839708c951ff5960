"""Primitives of SyntheticShapes: exact surfaces, exact normals, exact area-uniform sampling.

The implicit functions and reference distributions below are written independently of the
library code."""

import math

import numpy as np
import pytest

from tensorframes.data import _shapes as S

N = 20_000
KS = 2.0 / math.sqrt(N)  # ~ the 0.1% critical value of the one-sample KS statistic


def ks_stat(samples, cdf):
    x = np.sort(np.asarray(samples))
    f = cdf(x)
    n = len(x)
    return max(np.max(np.arange(1, n + 1) / n - f), np.max(f - np.arange(n) / n))


def rng(seed=0):
    return np.random.default_rng(seed)


def cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def revolution_cdf_z(rho_fn, z_lo, z_hi, m=200_001):
    """CDF of z under the area measure of the surface of revolution rho(z) (polyline)."""

    def cdf(zq):
        t = np.linspace(0.0, math.pi, m)
        z = z_lo + (z_hi - z_lo) * (1 - np.cos(t)) / 2  # dense near the poles
        rho = rho_fn(z)
        seg = np.hypot(np.diff(rho), np.diff(z))
        area = np.concatenate([[0.0], np.cumsum(2 * math.pi * 0.5 * (rho[1:] + rho[:-1]) * seg)])
        return np.interp(zq, z, area / area[-1])

    return cdf


# ------------------------------------------------------------------------------ ellipsoid
def test_ellipsoid_surface_normals_outward():
    axes = np.array([1.2, 0.5, 0.8])
    p, n, _ = S.Ellipsoid(axes).sample(rng(), 5000)
    F = ((p / axes) ** 2).sum(1) - 1
    assert np.abs(F).max() < 1e-5
    assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-12)
    grad = 2 * p / axes**2
    assert cosine(n, grad).min() > 1 - 1e-9  # parallel and outward
    assert ((n * p).sum(1) > 0).all()


def test_unit_sphere_z_uniform_archimedes():
    p, _, _ = S.Ellipsoid((1, 1, 1)).sample(rng(), N)
    assert ks_stat(p[:, 2], lambda z: (z + 1) / 2) < KS
    # a parameter-space-uniform sampler (theta uniform) would be far off:
    theta = rng(1).uniform(0, math.pi, N)
    assert ks_stat(np.cos(theta), lambda z: (z + 1) / 2) > 5 * KS


@pytest.mark.parametrize("axes", [(1.0, 1.0, 0.3), (0.5, 0.5, 1.0)])
def test_ellipsoid_of_revolution_area_uniform(axes):
    a, _, c = axes
    p, _, _ = S.Ellipsoid(axes).sample(rng(), N)
    cdf = revolution_cdf_z(lambda z: a * np.sqrt(np.clip(1 - (z / c) ** 2, 0, None)), -c, c)
    assert ks_stat(p[:, 2], cdf) < KS


# ---------------------------------------------------------------------------------- torus
def test_torus_surface_normals_area():
    R, r = 0.8, 0.35
    p, n, _ = S.Torus(R, r).sample(rng(), N)
    rho = np.hypot(p[:, 0], p[:, 1])
    assert np.abs((rho - R) ** 2 + p[:, 2] ** 2 - r**2).max() < 1e-5
    grad = np.stack([(rho - R) * p[:, 0] / rho, (rho - R) * p[:, 1] / rho, p[:, 2]], -1)
    assert cosine(n, grad).min() > 1 - 1e-9
    # tube angle theta has density (R + r cos theta) / (2 pi R) on [-pi, pi]
    theta = np.arctan2(p[:, 2], rho - R)
    assert ks_stat(theta, lambda t: (R * (t + math.pi) + r * np.sin(t)) / (2 * math.pi * R)) < KS
    # azimuth uniform
    assert ks_stat(np.arctan2(p[:, 1], p[:, 0]), lambda t: (t + math.pi) / (2 * math.pi)) < KS


# --------------------------------------------------------------------------- superquadric
def sq_G(p, axes, e1, e2):
    s = np.abs(p / np.asarray(axes))
    return (s[:, 0] ** (2 / e2) + s[:, 1] ** (2 / e2)) ** (e2 / e1) + s[:, 2] ** (2 / e1)


@pytest.mark.parametrize(("axes", "e1", "e2"), [((0.9, 0.5, 0.7), 0.4, 1.5), ((1, 1, 1), 1.7, 0.3)])
def test_superquadric_surface_and_gradient_normals(axes, e1, e2):
    p, n, _ = S.Superquadric(axes, e1, e2).sample(rng(), 3000)
    assert np.abs(sq_G(p, axes, e1, e2) - 1).max() < 1e-5
    h = 1e-6
    fd = np.stack(
        [
            (sq_G(p + h * np.eye(3)[k], axes, e1, e2) - sq_G(p - h * np.eye(3)[k], axes, e1, e2))
            / (2 * h)
            for k in range(3)
        ],
        -1,
    )
    ok = np.linalg.norm(fd, axis=1) > 1e-3  # finite differences are unreliable where grad ~ 0
    assert ok.mean() > 0.99
    assert cosine(n[ok], fd[ok]).min() > 1 - 1e-5
    assert ((n * p).sum(1) > 0).all()  # convex, contains the origin: outward


def test_superquadric_of_revolution_area_uniform():
    a, c, e1 = 0.8, 1.0, 0.5  # e2 = 1: round in xy -> surface of revolution
    p, _, _ = S.Superquadric((a, a, c), e1, 1.0).sample(rng(), N)
    rho = lambda z: a * np.clip(1 - np.abs(z / c) ** (2 / e1), 0, None) ** (e1 / 2)  # noqa: E731
    assert ks_stat(p[:, 2], revolution_cdf_z(rho, -c, c)) < KS


# ----------------------------------------------------------------------- cylinder and cone
def test_cylinder_caps_and_side():
    r, h = 0.5, 1.4
    p, n, _ = S.Cylinder(r, h).sample(rng(), N)
    rho = np.hypot(p[:, 0], p[:, 1])
    side = np.abs(rho - r) < 1e-9
    cap = np.abs(np.abs(p[:, 2]) - h / 2) < 1e-9
    assert (side ^ cap).all()
    assert (np.abs(p[:, 2]) <= h / 2 + 1e-12).all() and (rho <= r + 1e-12).all()
    np.testing.assert_allclose(n[side], np.c_[p[side, :2] / rho[side, None], 0 * rho[side]])
    np.testing.assert_allclose(n[cap], np.c_[0 * rho[cap], 0 * rho[cap], np.sign(p[cap, 2])])
    frac = (2 * math.pi * r * h) / (2 * math.pi * r * h + 2 * math.pi * r * r)
    assert abs(side.mean() - frac) < 5 * math.sqrt(frac * (1 - frac) / N)
    top = cap & (p[:, 2] > 0)
    assert abs(top.sum() - (cap.sum() - top.sum())) < 5 * math.sqrt(cap.sum())
    assert ks_stat(p[side, 2], lambda z: (z + h / 2) / h) < 2 / math.sqrt(side.sum())
    assert ks_stat(rho[cap] ** 2, lambda q: q / r**2) < 2 / math.sqrt(cap.sum())


def test_open_cylinder_has_no_caps():
    p, n, _ = S.OpenCylinder(0.5, 1.0).sample(rng(), 2000)
    rho = np.hypot(p[:, 0], p[:, 1])
    assert np.abs(rho - 0.5).max() < 1e-9 and np.abs(n[:, 2]).max() == 0
    assert cosine(n[:, :2], p[:, :2]).min() > 1 - 1e-12


def test_cone_lateral_and_base():
    r, h = 0.6, 1.2
    p, n, _ = S.Cone(r, h).sample(rng(), N)
    z0, apex = -h / 3, 2 * h / 3
    rho = np.hypot(p[:, 0], p[:, 1])
    base = np.abs(p[:, 2] - z0) < 1e-9
    lateral = np.abs(rho - r * (apex - p[:, 2]) / h) < 1e-9
    assert (base ^ lateral).all()
    np.testing.assert_allclose(n[base], np.tile([0, 0, -1.0], (base.sum(), 1)))
    grad = np.c_[p[lateral, :2] / rho[lateral, None], np.full(lateral.sum(), r / h)]
    assert cosine(n[lateral], grad).min() > 1 - 1e-9
    s = math.hypot(r, h)
    frac = math.pi * r * r / (math.pi * r * r + math.pi * r * s)
    assert abs(base.mean() - frac) < 5 * math.sqrt(frac * (1 - frac) / N)
    t = (apex - p[lateral, 2]) / h  # slant distance from the apex / s: density ~ t
    assert ks_stat(t, lambda q: q**2) < 2 / math.sqrt(lateral.sum())
    assert ((n * p).sum(1) > 0).all()


# ------------------------------------------------------------------------------------ box
def test_box_faces_by_area():
    half = np.array([1.0, 0.5, 0.2])
    p, n, _ = S.Box(half).sample(rng(), N)
    on_face = np.isclose(np.abs(p), half, atol=1e-12, rtol=0)
    assert (on_face.sum(1) == 1).all()
    assert (np.abs(p) <= half + 1e-12).all()
    axis = on_face.argmax(1)
    expected_n = np.zeros_like(p)
    expected_n[np.arange(N), axis] = np.sign(p[np.arange(N), axis])
    np.testing.assert_array_equal(n, expected_n)
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]]).repeat(2)
    areas /= areas.sum()
    for k in range(6):
        ax, sg = k // 2, 1 - 2 * (k % 2)
        frac = ((axis == ax) & (np.sign(p[:, ax]) == sg)).mean()
        assert abs(frac - areas[k]) < 5 * math.sqrt(areas[k] * (1 - areas[k]) / N), k


# --------------------------------------------------------------------------- open patches
@pytest.mark.parametrize(("k1", "k2"), [(1.5, 1.5), (1.5, -1.5)])
def test_paraboloid_and_saddle(k1, k2):
    cls = S.Paraboloid if k1 * k2 > 0 else S.Saddle
    p, n, _ = cls(k1, k2).sample(rng(), N)
    x, y, z = p.T
    assert np.abs(z - 0.5 * (k1 * x * x + k2 * y * y)).max() < 1e-12
    assert (x * x + y * y <= 1 + 1e-12).all()
    assert cosine(n, np.c_[-k1 * x, -k2 * y, np.ones(N)]).min() > 1 - 1e-12
    # |k1| = |k2| = k: area element sqrt(1 + k^2 s^2) is radial; CDF of s^2 in closed form
    k = abs(k1)
    G = lambda s: ((1 + k * k * s * s) ** 1.5 - 1) / (3 * k * k)  # noqa: E731
    assert ks_stat(x * x + y * y, lambda q: G(np.sqrt(q)) / G(1.0)) < KS


# ------------------------------------------------------------------------------------ union
def test_union_visible_surface_only():
    parts = [
        S.Placed(S.Ellipsoid((1, 1, 1)), np.eye(3), np.zeros(3)),
        S.Placed(S.Ellipsoid((1, 1, 1)), np.eye(3), np.array([0.5, 0, 0])),
    ]
    p, n, part = S.Union(parts).sample(rng(), N)
    c = np.array([[0, 0, 0], [0.5, 0, 0]])[part]
    other = np.array([[0.5, 0, 0], [0, 0, 0]])[part]
    assert np.abs(np.linalg.norm(p - c, axis=1) - 1).max() < 1e-9  # on its own part
    assert (np.linalg.norm(p - other, axis=1) >= 1 - 1e-9).all()  # never inside the other
    np.testing.assert_allclose(n, p - c, atol=1e-12)  # exact normal of its own part
    assert abs((part == 0).mean() - 0.5) < 5 * math.sqrt(0.25 / N)
    # Archimedes on the visible piece x in [-1, 0.25] of sphere 0
    assert ks_stat(p[part == 0, 0], lambda x: (x + 1) / 1.25) < 2 / math.sqrt((part == 0).sum())


def test_random_unions_have_exact_part_normals():
    g = rng(3)
    for _ in range(5):
        u = S.Union.random(g)
        p, n, part = u.sample(g, 2000)
        for k, pl in enumerate(u.parts):
            sel = part == k
            for j, q in enumerate(u.parts):
                if j != k:
                    assert not q.inside(p[sel]).any()  # hidden points removed
            # on its own part's boundary, normal pointing out of it (edges excepted)
            eps = 1e-5
            crossing = pl.inside(p[sel] - eps * n[sel]) & ~pl.inside(p[sel] + eps * n[sel])
            assert crossing.mean() > 0.99
        assert np.allclose(np.linalg.norm(n, axis=1), 1, atol=1e-12)


def test_acceptance_function_thins_exactly():
    # density 0.1 + 0.9 (1 + z) / 2 on the unit sphere: z has density ~ (0.55 + 0.45 z)
    acc = lambda p: 0.1 + 0.9 * (1 + p[:, 2]) / 2  # noqa: E731
    p, _, _ = S.Ellipsoid((1, 1, 1)).sample(rng(), N, accept=acc)
    cdf = lambda z: (0.55 * (z + 1) + 0.225 * (z * z - 1)) / 1.1  # noqa: E731
    assert ks_stat(p[:, 2], cdf) < KS


# ------------------------------------------------------------------------------ CAD shapes
def _hex_faces(R, h, bore):
    """Independent description of a hexagonal prism with a bore: a list of
    ``(name, area, on_face(p) -> bool, normal(p) -> (m, 3))``."""
    faces = []
    for k in range(6):
        a0, a1 = k * math.pi / 3, (k + 1) * math.pi / 3
        v0 = np.array([R * math.cos(a0), R * math.sin(a0)])
        v1 = np.array([R * math.cos(a1), R * math.sin(a1)])
        mid = (a0 + a1) / 2
        nrm = np.array([math.cos(mid), math.sin(mid), 0.0])  # outward, perpendicular to edge
        apo = R * math.cos(math.pi / 6)

        def on(p, nrm=nrm, v0=v0, v1=v1, apo=apo):
            t = ((p[:, :2] - v0) @ (v1 - v0)) / ((v1 - v0) @ (v1 - v0))
            return (np.abs(p[:, :2] @ nrm[:2] - apo) < 1e-9) & (t > -1e-9) & (t < 1 + 1e-9)

        faces.append((f"side{k}", R * h, on, lambda p, nrm=nrm: np.tile(nrm, (len(p), 1))))
    cap = 1.5 * math.sqrt(3) * R * R - math.pi * bore**2
    for s in (1.0, -1.0):
        faces.append((f"cap{s:+.0f}", cap, lambda p, s=s: np.abs(p[:, 2] - s * h / 2) < 1e-12,
                      lambda p, s=s: np.tile([0.0, 0.0, s], (len(p), 1))))

    def on_bore(p):
        return np.abs(np.hypot(p[:, 0], p[:, 1]) - bore) < 1e-9

    def bore_normal(p):
        rho = np.hypot(p[:, 0], p[:, 1])[:, None]
        return np.concatenate([-p[:, :2] / rho, np.zeros((len(p), 1))], 1)

    faces.append(("bore", 2 * math.pi * bore * h, on_bore, bore_normal))
    return faces


def _check_faces(p, n, faces, tol_frac=4.0):
    """Every point lies on exactly one listed face (corners aside) with that face's normal,
    and the fractions per face follow the areas (binomial, ``tol_frac`` standard errors)."""
    total = sum(f[1] for f in faces)
    hit = np.stack([f[2](p) for f in faces], 1)
    assert hit.any(1).all(), "points off the surface"
    first = hit.argmax(1)
    for k, (name, area, _, normal) in enumerate(faces):
        sel = first == k
        if sel.any():
            assert np.allclose(n[sel], normal(p[sel]), atol=1e-12), name
        frac, expect = sel.mean(), area / total
        se = math.sqrt(expect * (1 - expect) / len(p))
        assert abs(frac - expect) < tol_frac * se, (name, frac, expect)


def test_hex_prism_faces_normals_and_area():
    shape = S.HexPrism(0.8, 0.5, 0.3)
    p, n, _ = shape.sample(rng(), N)
    _check_faces(p, n, _hex_faces(0.8, 0.5, 0.3))
    assert shape.cap_area == pytest.approx(1.5 * math.sqrt(3) * 0.64 - math.pi * 0.09)
    # the caps are uniform in the annular hexagon: radial CDF of the cap points in one
    # sixth-sector between the bore and the inscribed circle, against pi (r^2 - bore^2)
    cap = np.abs(np.abs(p[:, 2]) - 0.25) < 1e-12
    r = np.hypot(p[cap, 0], p[cap, 1])
    apo = 0.8 * math.cos(math.pi / 6)
    inner = r[r < apo]
    assert ks_stat(inner, lambda x: (x**2 - 0.09) / (apo**2 - 0.09)) < 2.0 / math.sqrt(
        len(inner))
    assert (np.hypot(p[:, 0], p[:, 1]) >= 0.3 - 1e-12).all()
    # the bore's normals point into the hole (towards the axis), every other face outward
    bore = np.abs(np.hypot(p[:, 0], p[:, 1]) - 0.3) < 1e-9
    assert ((n[bore, :2] * p[bore, :2]).sum(1) < 0).all()


def test_cube_is_a_box_with_equal_sides():
    c = S.Cube(0.6)
    p, n, _ = c.sample(rng(), N)
    assert np.allclose(np.abs(p).max(1), 0.6)
    axis = np.abs(p).argmax(1)
    assert np.array_equal(n, np.eye(3)[axis] * np.sign(p[np.arange(len(p)), axis])[:, None])
    counts = np.bincount(axis * 2 + (p[np.arange(len(p)), axis] < 0), minlength=6)
    se = math.sqrt(N * (1 / 6) * (5 / 6))
    assert np.abs(counts - N / 6).max() < 4 * se


def test_slotted_box_faces_normals_and_area():
    w, d, h, s, t = 1.2, 0.8, 0.5, 0.4, 0.3
    x, y = w / 2, d / 2
    faces = []

    def plane(axis, value, lo, hi, nrm, area, name):
        """Face ``p[axis] == value`` within the box ``lo <= p <= hi`` (other axes)."""

        def on(p):
            ok = np.abs(p[:, axis] - value) < 1e-12
            for ax in range(3):
                if ax != axis:
                    ok &= (p[:, ax] >= lo[ax] - 1e-12) & (p[:, ax] <= hi[ax] + 1e-12)
            return ok

        faces.append((name, area, on, lambda p: np.tile(nrm, (len(p), 1))))

    big = [-x, -y, -h / 2], [x, y, h / 2]
    plane(0, x, *big, [1.0, 0, 0], d * h, "+x")
    plane(0, -x, *big, [-1.0, 0, 0], d * h, "-x")
    plane(1, -y, *big, [0, -1.0, 0], w * h, "-y")
    plane(1, y, [-x, 0, -h / 2], [-s / 2, y, h / 2], [0, 1.0, 0], (w - s) / 2 * h, "+y left")
    plane(1, y, [s / 2, 0, -h / 2], [x, y, h / 2], [0, 1.0, 0], (w - s) / 2 * h, "+y right")
    plane(1, y - t, [-s / 2, 0, -h / 2], [s / 2, y, h / 2], [0, 1.0, 0], s * h, "slot floor")
    plane(0, s / 2, [0, y - t, -h / 2], [x, y, h / 2], [-1.0, 0, 0], t * h, "slot wall +")
    plane(0, -s / 2, [-x, y - t, -h / 2], [0, y, h / 2], [1.0, 0, 0], t * h, "slot wall -")
    cap = w * d - s * t
    for sg in (1.0, -1.0):
        def on_cap(p, sg=sg):
            in_slot = (np.abs(p[:, 0]) < s / 2) & (p[:, 1] > y - t)
            return (np.abs(p[:, 2] - sg * h / 2) < 1e-12) & ~in_slot

        faces.append((f"cap{sg:+.0f}", cap, on_cap,
                      lambda p, sg=sg: np.tile([0.0, 0.0, sg], (len(p), 1))))
    p, n, _ = S.SlottedBox(w, d, h, s, t).sample(rng(1), N)
    _check_faces(p, n, faces)


def test_cad_shapes_reject_bad_parameters():
    with pytest.raises(ValueError, match="bore"):
        S.HexPrism(0.8, 0.5, 0.8)
    with pytest.raises(ValueError, match="slotted_box"):
        S.SlottedBox(1.0, 1.0, 1.0, 1.5, 0.5)
    with pytest.raises(ValueError, match="prism"):
        S.Prism([(0, 0), (1, 0)], 1.0)
