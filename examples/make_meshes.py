"""Write five small meshes (outward-wound) into a folder, to try ``eval --data meshes`` and
``predict`` on meshes nobody trained on: a torus (x100, off-centre), a box (binary PLY), a
cylinder with flat caps (x0.01), an icosphere (binary PLY) and a hexagonal prism.

Usage: ``python -m examples.make_meshes DIR`` (docs/results.md, "Generalisation").
"""

from __future__ import annotations

import os
import sys

import numpy as np

Faces = list[list[int]]


def write_off(path: str, v: np.ndarray, f: Faces) -> None:
    """ASCII OFF with polygon faces."""
    with open(path, "w") as fh:
        fh.write(f"OFF\n{len(v)} {len(f)} 0\n")
        fh.writelines(" ".join(f"{x:.9g}" for x in row) + "\n" for row in v)
        fh.writelines(f"{len(face)} " + " ".join(map(str, face)) + "\n" for face in f)


def write_ply_mesh(path: str, v: np.ndarray, f: Faces) -> None:
    """Binary little-endian PLY with float vertices and ``uchar int`` polygon faces."""
    head = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(v)}\n"
            "property float x\nproperty float y\nproperty float z\n"
            f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    body = np.asarray(v, "<f4").tobytes() + b"".join(
        np.uint8(len(face)).tobytes() + np.asarray(face, "<i4").tobytes() for face in f)
    with open(path, "wb") as fh:
        fh.write(head.encode() + body)


def torus(R: float = 3.0, r: float = 1.0, n: int = 48, m: int = 24) -> tuple[np.ndarray, Faces]:
    u, w = np.meshgrid(np.arange(n) * 2 * np.pi / n, np.arange(m) * 2 * np.pi / m, indexing="ij")
    ring = R + r * np.cos(w)
    v = np.stack([ring * np.cos(u), ring * np.sin(u), r * np.sin(w)], -1).reshape(-1, 3)

    def idx(i: int, j: int) -> int:
        return (i % n) * m + (j % m)

    f = [[idx(i, j), idx(i + 1, j), idx(i + 1, j + 1), idx(i, j + 1)]
         for i in range(n) for j in range(m)]
    return v, f


def box(a: float = 4.0, b: float = 2.0, c: float = 1.0) -> tuple[np.ndarray, Faces]:
    v = np.array([[x, y, z] for x in (0, a) for y in (0, b) for z in (0, c)], float)
    f = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    return v, f


def cylinder(r: float = 1.0, h: float = 3.0, n: int = 64) -> tuple[np.ndarray, Faces]:
    t = np.arange(n) * 2 * np.pi / n
    bot = np.stack([r * np.cos(t), r * np.sin(t), np.zeros(n)], -1)
    v = np.concatenate([bot, bot + [0, 0, h], [[0, 0, 0], [0, 0, h]]])
    f = [[i, (i + 1) % n, n + (i + 1) % n, n + i] for i in range(n)]
    f += [[2 * n, (i + 1) % n, i] for i in range(n)]  # bottom cap, normal -z
    f += [[2 * n + 1, n + i, n + (i + 1) % n] for i in range(n)]  # top cap, normal +z
    return v, f


def icosphere(level: int = 3, radius: float = 2.0) -> tuple[np.ndarray, Faces]:
    p = (1 + 5**0.5) / 2
    corners = [[-1, p, 0], [1, p, 0], [-1, -p, 0], [1, -p, 0], [0, -1, p], [0, 1, p],
               [0, -1, -p], [0, 1, -p], [p, 0, -1], [p, 0, 1], [-p, 0, -1], [-p, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    v = [np.array(x, float) / np.linalg.norm(x) for x in corners]
    for _ in range(level):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int, cache: dict[tuple[int, int], int] = cache) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                x = v[a] + v[b]
                v.append(x / np.linalg.norm(x))
                cache[key] = len(v) - 1
            return cache[key]

        refined = []
        for a, b, c in f:
            ab, bc, ca = mid(a, b), mid(b, c), mid(c, a)
            refined += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = refined
    return np.array(v) * radius, f


def hex_prism(r: float = 2.0, h: float = 1.0) -> tuple[np.ndarray, Faces]:
    t = np.arange(6) * np.pi / 3
    bot = np.stack([r * np.cos(t), r * np.sin(t), np.zeros(6)], -1)
    v = np.concatenate([bot, bot + [0, 0, h]])
    f = [[i, (i + 1) % 6, 6 + (i + 1) % 6, 6 + i] for i in range(6)]
    f += [[5, 4, 3, 2, 1, 0], [6, 7, 8, 9, 10, 11]]
    return v, f


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    v, f = torus()
    write_off(os.path.join(out, "torus.off"), v * 100 + [500, -200, 30], f)  # other units
    write_ply_mesh(os.path.join(out, "box.ply"), *box())
    v, f = cylinder()
    write_off(os.path.join(out, "cylinder.off"), v * 0.01, f)
    write_ply_mesh(os.path.join(out, "icosphere.ply"), *icosphere())
    write_off(os.path.join(out, "hex_prism.off"), *hex_prism())
    print(sorted(os.listdir(out)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m examples.make_meshes DIR")
    main(sys.argv[1])
