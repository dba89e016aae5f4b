"""The shared-prefix lm-eval backend (evals/lm_backend.py) against lm-eval's own HF backend on the same items: the
same requests, per-choice log-likelihoods equal to fp32 rounding (tests/tolerance.py: relative) and identical
per-item metrics, on a few items of every benchmark the suite runs (tiny model here; SmolLM2 in
benchmarks/lm_scoring.py)."""
from __future__ import annotations

import os

import pytest
from tolerance import assert_close

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from evals.benchmarks import BenchmarkSpec, evaluate_benchmarks, make_lm  # noqa: E402

BENCHES = ("mmlu", "truthfulqa_mc2", "hellaswag", "winogrande", "arc_challenge")


@pytest.fixture(scope="module")
def tiny():
    from repro.runtime import models

    return models.load("tiny", device="cpu")


def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    from evals.lm_backend import NAME, PackedLM

    assert get_model(NAME) is PackedLM


def test_packed_equals_hf_backend_per_choice(tiny, data_dir):
    model, tok = tiny
    specs = [BenchmarkSpec(name, 8 if name == "mmlu" else 3) for name in BENCHES]
    runs = {b: evaluate_benchmarks(model, tok, specs, data_dir=data_dir, seed=7, batch_size=4, max_length=512,
                                   return_loglikelihoods=True, backend=b) for b in ("hf", "packed")}
    hf, packed = runs["hf"], runs["packed"]
    assert hf["lm_backend"]["name"] == "hf" and packed["lm_backend"]["class"] == "evals.lm_backend.PackedLM"
    for name in BENCHES:
        a, b = hf["samples"][name], packed["samples"][name]
        assert [it["key"] for it in a] == [it["key"] for it in b]
        for x, y in zip(a, b):
            assert len(x["loglikelihoods"]) == len(y["loglikelihoods"]) >= 2
            assert_close(y["loglikelihoods"], x["loglikelihoods"])
            for key, value in x.items():
                if key != "loglikelihoods":       # 0/1 accuracies identical; mc2's probability mass to rounding
                    assert y[key] == (value if value in (0.0, 1.0) or isinstance(value, str)
                                      else pytest.approx(value, rel=1e-3, abs=1e-6)), (name, key)
        for key, value in hf["results"][name].items():
            assert packed["results"][name][key] == (value if not isinstance(value, float)
                                                    else pytest.approx(value, rel=1e-3, abs=1e-6)), (name, key)


def test_rolling_and_unsupported(tiny):
    from lm_eval.api.instance import Instance

    model, tok = tiny
    hf, packed = make_lm(model, tok, backend="hf"), make_lm(model, tok, backend="packed")
    texts = ["The quick brown fox jumps over the lazy dog. " * 3, "Short one."]
    reqs = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(texts)]
    assert_close(packed.loglikelihood_rolling(reqs, disable_tqdm=True), hf.loglikelihood_rolling(reqs, disable_tqdm=True))
    # an empty context: both use prefix_token_id in its place
    reqs = [Instance("loglikelihood", {}, ("", " hello world"), 0), Instance("loglikelihood", {}, ("A", " b"), 1)]
    got, want = packed.loglikelihood(reqs, disable_tqdm=True), hf.loglikelihood(reqs, disable_tqdm=True)
    assert_close([g[0] for g in got], [w[0] for w in want])
    assert [g[1] for g in got] == [w[1] for w in want]
    with pytest.raises(NotImplementedError, match="log-likelihoods only"):
        packed.generate_until([Instance("generate_until", {}, ("Hi", {"until": ["\n"]}), 0)])
    with pytest.raises(ValueError, match="unknown benchmark backend"):
        make_lm(model, tok, backend="vllm")


def test_lm_eval_takes_its_log_softmax_in_fp32(tiny):
    """On a GPU the model runs in bf16; HFLM's log-softmax would too unless told (our own scoring upcasts)."""
    import torch

    model, tok = tiny
    for backend in ("hf", "packed"):
        assert make_lm(model, tok, backend=backend).softmax_dtype == torch.float32
