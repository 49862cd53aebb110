"""Process setup that must precede importing torch, and a description of what a run ran on."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess

# pytorch-grad-cam's distribution is called grad-cam; torchcam and captum as usual.
LIBRARIES = ("jax", "jaxlib", "flax", "torch", "grad-cam", "captum", "torchcam", "numpy")


def prepare_process() -> None:
    """Settings read once when torch's OpenMP runtime loads: call before ``import torch``.

    With the default (active) OpenMP wait policy, PyTorch's worker threads spin between parallel
    regions; on a machine whose cores are shared with other processes this made the PyTorch
    forward 5-30x slower at 2 threads than at 1. The passive policy makes idle threads sleep, which
    is the fair setting on a loaded machine (set ``OMP_WAIT_POLICY`` yourself to override).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def usable_cores() -> int:
    """The cores this process may run on (what XLA:CPU sizes its thread pool by)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def gpu_name() -> str:
    """The GPU's name from nvidia-smi, or "none"."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "none"
    names = [line.strip() for line in out.splitlines() if line.strip()]
    return ", ".join(names) if names else "none"


def versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    return found


def machine() -> dict[str, object]:
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "gpu": gpu_name(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
