"""Formatting shared by the ``compare`` and ``ablation`` reports: table cells, times, the
machine a run was measured on."""

from __future__ import annotations

import os
import platform

import torch


def md(text: str, limit: int = 160) -> str:
    """``text`` on one line, ``|`` escaped, cut to ``limit`` characters (a table cell)."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt_time(seconds: float | None) -> str:
    """``"42 s"``, or ``"2.5 min"`` from two minutes on (``""`` for ``None``)."""
    if seconds is None:
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def machine_info() -> dict:
    """Platform, processor, threads and versions (stored with the results)."""
    info = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": str(torch.__version__),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["processor"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info
