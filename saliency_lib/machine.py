"""What machine a benchmark ran on (recorded next to timings in the benchmark JSONs)."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def cpu_description(cpuinfo: Path = CPUINFO) -> dict:
    """The CPU's architecture, model name and whether it has AVX512-BF16 / AMX-BF16, read from ``cpuinfo`` (Linux's
    /proc/cpuinfo; the first processor's entry). Where the file cannot be read (other systems) the model name is
    ``""`` and both flags False. Whether bf16 autocast speeds up training depends on these."""
    info = {"machine": platform.machine(), "model_name": "", "avx512_bf16": False, "amx_bf16": False}
    try:
        text = cpuinfo.read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not info["model_name"]:
            info["model_name"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            info["avx512_bf16"] = "avx512_bf16" in flags
            info["amx_bf16"] = "amx_bf16" in flags
            break   # the first processor's flags
    return info
