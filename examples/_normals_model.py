"""The model of a normal-regression run: built by ``models.build``, counted and hashed.

There is no registry here: every name goes to :func:`models.build` (which also holds the
parameter-free PCA estimate, ``arch="pca"``). The only extension is an import path
``"package.module:factory"`` for a model that is not part of ``models`` (the tests use it for a
tiny stand-in): ``factory(flavour, **options)`` must return a module that follows the ``models``
contract.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable

import torch
from torch import nn

import models

__all__ = ["build_model", "count_parameters", "parameter_hash", "unwrap"]


def build_model(arch: str, flavour: str, options: dict) -> nn.Module:
    """``models.build(arch, flavour, **options)``, or ``factory(flavour, **options)`` for
    ``arch="package.module:factory"``.

    The module gets ``arch``, ``flavour``, ``options`` and ``augment`` attributes (whether the
    trainer applies random O(3) augmentation); an option the model does not take raises a
    ``ValueError`` naming the model and the options.
    """
    if ":" in arch:
        mod_name, _, fn_name = arch.partition(":")
        factory = getattr(importlib.import_module(mod_name), fn_name)
        model = _call_factory(factory, arch, flavour, options)
    else:
        model = _call_factory(models.build, arch, flavour, options, pass_arch=True)
    model.arch, model.flavour, model.options = arch, flavour, dict(options)
    model.augment = bool(getattr(model, "augment", False)) or flavour == "augment"
    return model


def _call_factory(
    factory: Callable[..., nn.Module],
    arch: str,
    flavour: str,
    options: dict,
    pass_arch: bool = False,
) -> nn.Module:
    args = (arch, flavour) if pass_arch else (flavour,)
    try:
        return factory(*args, **options)
    except TypeError as err:
        if "argument" not in str(err):  # not a signature mismatch: a bug, keep the traceback
            raise
        raise ValueError(
            f"invalid --model-option for arch={arch!r} flavour={flavour!r} "
            f"(options {options!r}): {err}"
        ) from None


def count_parameters(model: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def parameter_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name, p in sorted(unwrap(model).named_parameters()):
        t = p.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (else ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
