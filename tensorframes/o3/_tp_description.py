r"""What a Clebsch-Gordan tensor product computes, apart from how: paths, constants, weights.

:func:`describe_tensor_product` validates e3nn-style instructions and computes e3nn's
normalization constants and flat weight layout into a :class:`TensorProductDescription`.
:func:`tensor_product_reference` is the slow, obviously correct path (one einsum per
instruction, as written in the docstring formula of :class:`~tensorframes.o3.TensorProduct`)
that the fast paths of :mod:`tensorframes.o3._tensor_product` are tested against in float64.
Internal: not exported by :mod:`tensorframes.o3`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..reps.irreps import Irreps
from ._wigner_3j import wigner_3j

__all__ = [
    "Instruction",
    "TensorProductDescription",
    "describe_tensor_product",
    "tensor_product_reference",
]

MODES = ("uvw", "uvu", "uvv", "uuw", "uuu", "uvuv")


class Instruction(NamedTuple):
    """One path ``in1[i_in1] (x) in2[i_in2] -> out[i_out]`` (as e3nn's ``Instruction``).

    ``path_weight`` is the final multiplicative constant of the path: the normalization from
    ``irrep_normalization`` / ``path_normalization`` / variances times the user's path weight.
    """

    i_in1: int
    i_in2: int
    i_out: int
    connection_mode: str
    has_weight: bool
    path_weight: float
    path_shape: tuple[int, ...]


@dataclass(frozen=True)
class TensorProductDescription:
    """What a tensor product computes, independent of how: irreps, paths, constants, weights.

    ``weight_slices[k]`` is the slice of the flat weight vector used by instruction ``k``
    (``None`` without weight); the layout equals e3nn's (instructions in order, each weight
    ``path_shape`` row-major).
    """

    irreps_in1: Irreps
    irreps_in2: Irreps
    irreps_out: Irreps
    instructions: tuple[Instruction, ...]
    weight_numel: int
    weight_slices: tuple[slice | None, ...]


def _path_shape(mode: str, mul1: int, mul2: int, mul_out: int) -> tuple[int, ...]:
    return {
        "uvw": (mul1, mul2, mul_out),
        "uvu": (mul1, mul2),
        "uvv": (mul1, mul2),
        "uuw": (mul1, mul_out),
        "uuu": (mul1,),
        "uvuv": (mul1, mul2),
    }[mode]


def _num_elements(mode: str, mul1: int, mul2: int) -> int:
    return {"uvw": mul1 * mul2, "uvu": mul2, "uvv": mul1, "uuw": mul1, "uuu": 1, "uvuv": 1}[mode]


def _variances(var: Sequence[float] | None, irreps: Irreps, name: str) -> list[float]:
    if var is None:
        return [1.0] * len(irreps)
    var = [float(v) for v in var]
    if len(var) != len(irreps):
        raise ValueError(f"{name} needs one variance per block of {irreps} ({len(irreps)}), "
                         f"got {len(var)}")
    return var


def describe_tensor_product(
    irreps_in1: Irreps | str,
    irreps_in2: Irreps | str,
    irreps_out: Irreps | str,
    instructions: Sequence[tuple],
    *,
    in1_var: Sequence[float] | None = None,
    in2_var: Sequence[float] | None = None,
    out_var: Sequence[float] | None = None,
    irrep_normalization: str = "component",
    path_normalization: str = "element",
) -> TensorProductDescription:
    """Validate the instructions and compute e3nn's normalization constants and weight layout.

    Normalization (identical to e3nn 0.6), per instruction into output block ``o``:
    ``alpha = a_irrep / x_path * out_var[o] * path_weight`` and the path is scaled by
    ``sqrt(alpha)``, with ``a_irrep = 2l_out+1`` ("component"), ``(2l_1+1)(2l_2+1)`` ("norm") or
    ``1`` ("none"), and ``x_path`` the summed fan-in ``sum in1_var in2_var num_elements`` over the
    paths into ``o`` ("element"), that of the path times the number of paths into ``o`` ("path"),
    or 1 ("none").
    """
    irreps_in1, irreps_in2, irreps_out = Irreps(irreps_in1), Irreps(irreps_in2), Irreps(irreps_out)
    if irrep_normalization not in ("component", "norm", "none"):
        raise ValueError("irrep_normalization must be 'component', 'norm' or 'none', "
                         f"got {irrep_normalization!r}")
    if path_normalization not in ("element", "path", "none"):
        raise ValueError("path_normalization must be 'element', 'path' or 'none', "
                         f"got {path_normalization!r}")
    raw = []
    for ins in instructions:
        ins = tuple(ins)
        if len(ins) not in (5, 6):
            raise ValueError("an instruction is (i_in1, i_in2, i_out, mode, has_weight"
                             f"[, path_weight]), got {ins!r}")
        i1, i2, io, mode, has_weight = ins[:5]
        pw = float(ins[5]) if len(ins) == 6 else 1.0
        for i, irreps, name in ((i1, irreps_in1, "i_in1"), (i2, irreps_in2, "i_in2"),
                                (io, irreps_out, "i_out")):
            if not isinstance(i, int) or not 0 <= i < len(irreps):
                raise ValueError(f"{name}={i!r} in {ins!r} is not a block index of {irreps}")
        if mode not in MODES:
            raise ValueError(f"connection mode must be one of {MODES}, got {mode!r} in {ins!r}")
        (m1, ir1), (m2, ir2), (mo, iro) = irreps_in1[i1], irreps_in2[i2], irreps_out[io]
        if ir1.p * ir2.p != iro.p or not abs(ir1.l - ir2.l) <= iro.l <= ir1.l + ir2.l:
            raise ValueError(f"{ir1} x {ir2} -> {iro} in {ins!r} is not allowed by the "
                             "selection rules (triangle and parity)")
        if mode == "uvw" and not has_weight:
            raise ValueError(f"mode 'uvw' needs has_weight=True, got {ins!r}")
        if mode in ("uvu", "uuu") and m1 != mo or mode == "uvv" and m2 != mo:
            raise ValueError(f"mode {mode!r} needs matching multiplicities, got {ins!r} for "
                             f"{m1}x{ir1}, {m2}x{ir2} -> {mo}x{iro}")
        if mode in ("uuw", "uuu") and m1 != m2:
            raise ValueError(f"mode {mode!r} needs equal input multiplicities in {ins!r}")
        if mode == "uuw" and not has_weight and mo != 1:
            raise ValueError(f"mode 'uuw' without weight needs output multiplicity 1 ({ins!r})")
        if mode == "uvuv" and m1 * m2 != mo:
            raise ValueError(f"mode 'uvuv' needs mul_out = mul1 * mul2 in {ins!r}")
        raw.append((i1, i2, io, mode, bool(has_weight), pw, _path_shape(mode, m1, m2, mo)))

    v1 = _variances(in1_var, irreps_in1, "in1_var")
    v2 = _variances(in2_var, irreps_in2, "in2_var")
    vo = _variances(out_var, irreps_out, "out_var")

    def fan_in(r: tuple) -> float:
        return v1[r[0]] * v2[r[1]] * _num_elements(r[3], irreps_in1[r[0]].mul,
                                                   irreps_in2[r[1]].mul)

    final, slices, offset = [], [], 0
    for r in raw:
        i1, i2, io, mode, has_weight, pw, shape = r
        ir1, ir2, iro = irreps_in1[i1].ir, irreps_in2[i2].ir, irreps_out[io].ir
        alpha = {"component": iro.dim, "norm": ir1.dim * ir2.dim, "none": 1}[irrep_normalization]
        if path_normalization == "element":
            x = sum(fan_in(s) for s in raw if s[2] == io)
        elif path_normalization == "path":
            x = fan_in(r) * sum(1 for s in raw if s[2] == io)
        else:
            x = 1
        if x > 0:
            alpha /= x
        alpha *= vo[io] * pw
        final.append(Instruction(i1, i2, io, mode, has_weight, math.sqrt(alpha), shape))
        if has_weight:
            n = math.prod(shape)
            slices.append(slice(offset, offset + n))
            offset += n
        else:
            slices.append(None)
    return TensorProductDescription(irreps_in1, irreps_in2, irreps_out, tuple(final), offset,
                                    tuple(slices))


def _weight_of(desc: TensorProductDescription, k: int, weight: torch.Tensor, shared: bool
               ) -> torch.Tensor:
    sl = desc.weight_slices[k]
    shape = desc.instructions[k].path_shape
    if shared:
        return weight[sl].reshape(shape)
    return weight[:, sl].reshape(-1, *shape)


def tensor_product_reference(desc: TensorProductDescription, x1: torch.Tensor, x2: torch.Tensor,
                             weight: torch.Tensor | None = None) -> torch.Tensor:
    r"""Slow reference: one explicit einsum per instruction (no grouping, no sparsity).

    ``x1: (Z, in1.dim)``, ``x2: (Z, in2.dim)``, ``weight: (numel,)`` (shared) or
    ``(Z, numel)``. For ``uvw``:
    ``out[z, w, k] += c * sum_{uvij} W[u, v, w] C[i, j, k] x1[z, u, i] x2[z, v, j]``.
    """
    Z = x1.shape[0]
    shared = weight is None or weight.dim() == 1
    outs = [x1.new_zeros(Z, mul, ir.dim) for mul, ir in desc.irreps_out]
    for k, ins in enumerate(desc.instructions):
        (m1, ir1), (m2, ir2) = desc.irreps_in1[ins.i_in1], desc.irreps_in2[ins.i_in2]
        a = x1[:, desc.irreps_in1.slices()[ins.i_in1]].reshape(Z, m1, ir1.dim)
        b = x2[:, desc.irreps_in2.slices()[ins.i_in2]].reshape(Z, m2, ir2.dim)
        C = wigner_3j(ir1.l, ir2.l, desc.irreps_out[ins.i_out].ir.l, dtype=x1.dtype,
                      device=x1.device)
        mode = ins.connection_mode
        if ins.has_weight:
            W = _weight_of(desc, k, weight, shared)
            zw = "" if shared else "z"
            spec = {
                "uvw": f"{zw}uvw,ijk,zui,zvj->zwk", "uvu": f"{zw}uv,ijk,zui,zvj->zuk",
                "uvv": f"{zw}uv,ijk,zui,zvj->zvk", "uuw": f"{zw}uw,ijk,zui,zuj->zwk",
                "uuu": f"{zw}u,ijk,zui,zuj->zuk", "uvuv": f"{zw}uv,ijk,zui,zvj->zuvk",
            }[mode]
            y = torch.einsum(spec, W, C, a, b)
        else:
            spec = {
                "uvu": "ijk,zui,zvj->zuk", "uvv": "ijk,zui,zvj->zvk", "uuw": "ijk,zui,zuj->zk",
                "uuu": "ijk,zui,zuj->zuk", "uvuv": "ijk,zui,zvj->zuvk",
            }[mode]
            y = torch.einsum(spec, C, a, b)
        outs[ins.i_out] = outs[ins.i_out] + ins.path_weight * y.reshape(outs[ins.i_out].shape)
    return torch.cat([o.reshape(Z, -1) for o in outs], dim=1) if outs else x1.new_zeros(Z, 0)
