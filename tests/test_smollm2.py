"""The real model end to end on CPU: SmolLM2-135M-Instruct fetched by the project's own code, generating for real
GSM8K test items through the HF backend, judged, and served from the generation cache on a second call."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evals.judges import Verdict
from evals.tasks import get_task
from repro.runtime.cache import GenerationCache
from repro.runtime.generate import DecodingParams, Generation, HFGenerator, make_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
NAME = "smollm2-135m-instruct"




def fetch_cli() -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "repro", "models", "fetch", NAME], cwd=REPO, capture_output=True,
                       text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return r, time.perf_counter() - t0


def test_models_fetch_cli_prints_the_cached_folder(smollm2_dir):
    done = Path(smollm2_dir).parent / "DONE.json"
    assert done.is_file()
    stamp = done.stat().st_mtime_ns
    for _ in range(2):
        r, seconds = fetch_cli()
        assert r.returncode == 0, r.stderr
        folder = Path(r.stdout.strip().splitlines()[-1])
        assert folder == Path(smollm2_dir)
        assert folder.is_dir() and (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        assert seconds < 30, f"a cached fetch took {seconds:.1f} s"
    assert done.stat().st_mtime_ns == stamp, "a second fetch must reuse the cache, not convert again"


def test_generate_judge_and_cache_on_gsm8k(smollm2_dir, data_dir, tmp_path):
    task = get_task("gsm8k")
    examples = task.load("test", data_dir)[:3]
    prompts = [task.predict_messages(ex) for ex in examples]
    params = DecodingParams(max_new_tokens=48, stop=task.stop)
    tag = f"gsm8k.predict.{task.template_version}"

    gen = make_generator(str(smollm2_dir), backend="hf", cache=GenerationCache(tmp_path / "cache"), batch_size=3,
                         device="cpu")
    assert isinstance(gen, HFGenerator) and gen.identity["backend"] == "hf"
    assert gen.tokenizer.chat_template, "SmolLM2-Instruct must come with its chat template"
    outs = gen.generate(prompts, params, tag=tag, progress=False)
    assert len(outs) == 3
    for o in outs:
        assert isinstance(o, Generation) and not o.cached
        assert isinstance(o.text, str) and o.text.strip(), "a real instruct model answers something"
        assert 1 <= o.n_output_tokens <= 48 and o.n_prompt_tokens > 50
        assert o.finish_reason in ("eos", "length", "stop")
    assert gen.stats.seconds > 0 and gen.stats.output_tokens == sum(o.n_output_tokens for o in outs)

    verdicts = task.judge_many(examples, [o.text for o in outs])
    assert len(verdicts) == 3
    for v in verdicts:
        assert isinstance(v, Verdict) and isinstance(v.correct, bool)
        assert isinstance(v.reason, str) and v.reason
        assert v.extracted is None or isinstance(v.extracted, str)
        if v.extracted is None:
            assert v.reason == "no number in response" and not v.correct
        else:
            assert ("==" in v.reason) is v.correct

    seconds = gen.stats.seconds
    again = gen.generate(prompts, params, tag=tag, progress=False)
    assert all(o.cached for o in again)
    assert [o.text for o in again] == [o.text for o in outs]
    assert gen.stats.seconds == seconds, "cached results must take no generation time"

    # a fresh generator over the same cache folder (a rerun) generates nothing either
    rerun = HFGenerator(str(smollm2_dir), cache=GenerationCache(tmp_path / "cache"), model_obj=gen.model)
    assert rerun.shard == gen.shard
    third = rerun.generate(prompts, params, tag=tag, progress=False)
    assert all(o.cached for o in third) and rerun.stats.seconds == 0
    assert [o.text for o in third] == [o.text for o in outs]
    assert [v.to_dict() for v in task.judge_many(examples, [o.text for o in third])] == \
        [v.to_dict() for v in verdicts]


@pytest.mark.parametrize("name_form", ["registered", "folder"])
def test_same_cache_identity_by_name_or_folder(smollm2_dir, name_form):
    """The registered name and its folder are the same weights, so they share one cache shard."""
    from repro.runtime import models  # noqa: PLC0415

    name = NAME if name_form == "registered" else str(smollm2_dir)
    assert models.fingerprint(name) == models.fingerprint_folder(Path(smollm2_dir))
