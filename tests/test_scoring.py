"""Log-probabilities of targets: the packed scorer against an independent, one-sequence-at-a-time computation."""
from __future__ import annotations

import pytest
import torch
from tolerance import approx

from repro.runtime import models
from repro.runtime.chat import encode_pair
from repro.runtime.scoring import score_encoded, score_responses


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
            assert s.sum == approx(naive_logp(model, pair), floor=2e-4)


def test_scores_are_cached(model_and_tok, tmp_path):
    from repro.runtime.cache import GenerationCache

    model, tok = model_and_tok
    cache = GenerationCache(tmp_path)
    items = [([{"role": "user", "content": "hi"}], "hello there")]
    first = score_responses(model, tok, items, cache=cache, identity={"model": "x" * 16})
    second = score_responses(None, tok, items, cache=cache, identity={"model": "x" * 16})  # no model needed
    assert first == second


def test_a_killed_scoring_resumes_at_its_first_unfinished_chunk_with_the_same_numbers(model_and_tok, tmp_path):
    """Chunks are cut at prompt changes, at the same places whatever is cached; each is cached as it finishes."""
    from repro.runtime.cache import GenerationCache

    model, tok = model_and_tok
    items = [([{"role": "user", "content": f"question {i // 2}"}], f"candidate {i}") for i in range(9)]
    ident = {"model": "y" * 16}
    whole = score_responses(model, tok, items, cache=GenerationCache(tmp_path / "a"), identity=ident, chunk=3)

    class Killed(Exception):
        pass

    def kill_after_first(done, total):
        if done < total:
            raise Killed
    cache = GenerationCache(tmp_path / "b")
    seen: list = []
    with pytest.raises(Killed):
        score_responses(model, tok, items, cache=cache, identity=ident, chunk=3, on_chunk=kill_after_first)
    assert len(GenerationCache(tmp_path / "b")) == 4    # 3 items, then on to the prompt change: a pair stays whole
    resumed = score_responses(model, tok, items, cache=GenerationCache(tmp_path / "b"), identity=ident, chunk=3,
                              on_chunk=lambda d, t: seen.append(d))
    assert seen == [4, 8, 9]                      # the first chunk from the cache, then the two unfinished ones
    assert resumed == whole                       # the same chunks: the same numbers, bit for bit


def naive_sequence(model, seq, n):
    ids = torch.tensor([seq[:-1]])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    rows = logp[len(seq) - 1 - n:]
    return [float(rows[k, seq[len(seq) - n + k]]) for k in range(n)], bool(
        (rows.argmax(-1) == torch.tensor(seq[len(seq) - n:])).all())


def test_shared_prefixes_are_scored_once_and_equal_one_by_one(model_and_tok):
    """Candidates sharing a prompt, a preamble shared by every item (cached when over the budget), one sequence that
    is a prefix of another, identical inputs with different targets, and several scored tokens inside the shared
    part: each log p equals the one-sequence-at-a-time computation, whatever the budget."""
    from repro.runtime.packing import PrefixTree
    from repro.runtime.scoring import score_sequences

    model, _ = model_and_tok
    g = torch.Generator().manual_seed(0)
    preamble = torch.randint(5, 500, (40,), generator=g).tolist()
    seqs, ns = [], []
    for item in range(4):
        question = torch.randint(5, 500, (7 + item,), generator=g).tolist()
        for choice in range(3):
            answer = torch.randint(5, 500, (1 + choice * 2,), generator=g).tolist()
            seqs.append(preamble + question + answer)
            ns.append(len(answer))
        seqs.append(preamble + question[:4])          # scored tokens inside another item's prefix
        ns.append(3)
    seqs += [[9, 8, 7, 6], [9, 8, 7, 5], [9, 8, 7, 6, 4, 3]]   # same inputs, other targets; a prefix of another
    ns += [1, 1, 3]
    tree = PrefixTree(seqs, ns)
    assert tree.n_nodes < sum(len(s) - 1 for s in seqs) // 2      # the preamble and questions are shared
    expected = [naive_sequence(model, s, n) for s, n in zip(seqs, ns)]
    for budget in (16, 64, 100_000):   # preamble cached (16, 64) or everything in one row
        got = score_sequences(model, seqs, ns, max_batch_tokens=budget)
        for (want, want_greedy), s in zip(expected, got):
            assert s.logps == approx(want)
            assert s.greedy == want_greedy


def test_candidates_of_one_prompt_share_it(model_and_tok):
    """score_responses: gold, paraphrase and own answer of one prompt give the same numbers as scoring each alone."""
    model, tok = model_and_tok
    msgs = [{"role": "user", "content": "a long shared prompt " * 12}]
    items = [(msgs, "the gold answer"), (msgs, "a paraphrase of it"), (msgs, "own")]
    together = score_responses(model, tok, items)
    alone = [score_responses(model, tok, [it])[0] for it in items]
    for a, b in zip(together, alone):
        assert a.n_tokens == b.n_tokens and a.sum == approx(b.sum)
