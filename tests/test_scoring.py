"""Log-probabilities of targets: the packed scorer against an independent, one-sequence-at-a-time computation."""
from __future__ import annotations

import pytest
import torch

from repro import models
from repro.chat import encode_pair
from repro.scoring import score_encoded, score_responses


@pytest.fixture(scope="module")
def model_and_tok():
    return models.load("tiny", device="cpu")


def naive_logp(model, pair):
    ids = torch.tensor([pair.input_ids])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return sum(float(logp[t - 1, pair.input_ids[t]]) for t in range(pair.prompt_len, len(pair.input_ids)))


def test_packed_scores_equal_one_by_one_scores(model_and_tok):
    model, tok = model_and_tok
    items = [([{"role": "user", "content": f"question {i} " * (i + 1)}], f"answer number {i} " * (3 - i % 3))
             for i in range(7)]
    pairs = [encode_pair(tok, m, r) for m, r in items]
    # a small budget forces several packed rows, a large one a single row: both must agree with the naive sums
    for budget in (60, 100_000):
        scores = score_encoded(model, pairs, max_batch_tokens=budget)
        for pair, s in zip(pairs, scores):
            assert s.n_tokens == pair.n_response
            assert s.sum == pytest.approx(naive_logp(model, pair), abs=2e-4)


def test_scores_are_cached(model_and_tok, tmp_path):
    from repro.cache import GenerationCache

    model, tok = model_and_tok
    cache = GenerationCache(tmp_path)
    items = [([{"role": "user", "content": "hi"}], "hello there")]
    first = score_responses(model, tok, items, cache=cache, identity={"model": "x" * 16})
    second = score_responses(None, tok, items, cache=cache, identity={"model": "x" * 16})  # no model needed
    assert first == second
