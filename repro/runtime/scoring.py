"""Log-probabilities of responses under a model: log p(response | prompt), summed and per token.

Pairs are tokenized by repro.runtime.chat.encode_pair, the same function the training core uses, so "log p of a target" here
is exactly the quantity training pushes up (end-of-turn token included).

Scoring shares prefixes (:func:`score_sequences`, on repro.runtime.packing's token trie): a training example's prompt is run
through the model once for all its candidates (gold, paraphrase, own answer), and the lm-eval backend
(evals/lm_backend.py) scores a benchmark item's context once for all its answer choices.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from repro.runtime.cache import GenerationCache, cache_key
from repro.runtime.chat import EncodedPair, Message, encode_pair
from repro.runtime.packing import PrefixTree, tree_row


@dataclass(frozen=True)
class LogProb:
    sum: float
    n_tokens: int

    @property
    def per_token(self) -> float:
        return self.sum / self.n_tokens

    def to_dict(self) -> dict:
        return {"sum": self.sum, "per_token": self.per_token, "n_tokens": self.n_tokens}


@dataclass(frozen=True)
class TokenScores:
    """Log-probabilities of the scored tokens of one sequence, and whether each was the argmax (greedy) token."""
    logps: list[float]
    greedy: bool

    @property
    def sum(self) -> float:
        return float(sum(self.logps))


def score_sequences(model, seqs: Sequence[Sequence[int]], n_scored: Sequence[int], *, max_batch_tokens: int = 1024,
                    progress: bool = False, stats: dict | None = None) -> list[TokenScores]:
    """log p of the last ``n_scored[i]`` tokens of each ``seqs[i]`` given the tokens before them.

    Every distinct prefix is computed once (repro.runtime.packing.PrefixTree): subtrees that fit ``max_batch_tokens`` are
    packed into rows under a tree-attention mask; a larger subtree runs its shared segment once and scores its
    children on top of that segment's KV cache. No padding anywhere; only the positions that predict a scored token
    go through the LM head. Equal to scoring each sequence alone up to float rounding (tests/test_scoring.py).
    ``stats``, when given, is updated with counts: sequences, input tokens (what one-by-one scoring would run),
    computed tokens (distinct prefixes actually run), rows and cached segments.
    """
    tree = PrefixTree(seqs, n_scored)
    device = next(model.parameters()).device
    logps = [[0.0] * n for n in n_scored]
    greedy = [True] * len(seqs)
    call = _ModelCall(model)
    bar = tqdm(total=tree.n_nodes, desc="log p", unit="tok", disable=not progress, leave=False)
    counts = {"sequences": len(seqs), "input_tokens": sum(len(x) - 1 for x in seqs), "computed_tokens": tree.n_nodes,
              "rows": 0, "cached_segments": 0}

    def consume(nodes: list[int], logits) -> None:
        if not nodes:
            return
        lsm = torch.log_softmax(logits.float(), dim=-1)
        rows, targets, dest = [], [], []
        for i, node in enumerate(nodes):
            for r, k, t in tree.wants[node]:
                rows.append(i)
                targets.append(t)
                dest.append((r, k))
        rows_t = torch.tensor(rows, device=lsm.device)
        values = lsm[rows_t, torch.tensor(targets, device=lsm.device)].tolist()
        best = lsm.argmax(-1)[rows_t].tolist()
        for (r, k), v, b, t in zip(dest, values, best, targets):
            logps[r][k] = v
            if b != t:
                greedy[r] = False

    def run_row(tops: list[int], ctx: list | None, n_cached: int) -> None:
        row = tree_row(tree, tops, n_cached, device)
        logits = call(row["input_ids"], row["position_ids"], call.mask(row["mask"]), ctx, row["keep"])
        consume([row["nodes"][i] for i in row["keep"]], logits)
        bar.update(len(row["nodes"]))
        counts["rows"] += 1

    def run_segment(seg: int, ctx: list | None, n_cached: int) -> list:
        """Run one shared segment on its own (causal, on top of ``ctx``) and return the KV of ctx + segment."""
        nodes = tree.seg_nodes[seg]
        keep = [i for i, node in enumerate(nodes) if node in tree.wants]
        ids = torch.tensor([[tree.token[x] for x in nodes]], device=device)
        pos = torch.tensor([[tree.depth[x] - 1 for x in nodes]], device=device)
        logits, kv = call(ids, pos, None, ctx, keep, return_kv=True)
        consume([nodes[i] for i in keep], logits)
        bar.update(len(nodes))
        counts["cached_segments"] += 1
        return kv

    def plan(tops: list[int], ctx: list | None, n_cached: int) -> None:
        pending, used = [], 0
        for seg in tops:
            size = tree.subtree_tokens[seg]
            if size > max_batch_tokens:          # a shared preamble under many items: cache it, then its children
                kv = run_segment(seg, ctx, n_cached)
                plan(tree.seg_children[seg], kv, n_cached + len(tree.seg_nodes[seg]))
                continue
            if pending and used + size > max_batch_tokens:
                run_row(pending, ctx, n_cached)
                pending, used = [], 0
            pending.append(seg)
            used += size
        if pending:
            run_row(pending, ctx, n_cached)

    with torch.inference_mode():
        plan(tree.roots, None, 0)
    bar.close()
    if stats is not None:
        for k, v in counts.items():
            stats[k] = stats.get(k, 0) + v
    return [TokenScores(lp, g) for lp, g in zip(logps, greedy)]


class _ModelCall:
    """One forward pass with an optional KV cache given as [(keys, values)] per layer (copied, never modified), a
    custom mask, explicit positions and logits only at ``keep``."""

    def __init__(self, model) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        params = inspect.signature(base.forward).parameters
        # transformers 5.x renamed past_key_values to cache (the old name is deprecated)
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        impl = getattr(base.config, "_attn_implementation", "sdpa")
        if impl not in ("sdpa", "eager"):
            raise ValueError(f"shared-prefix scoring builds its own 4D attention mask, which needs the 'sdpa' or "
                             f"'eager' attention implementation; this model uses {impl!r}")
        self.additive = impl == "eager"
        self.dtype = next(model.parameters()).dtype
        self.model = model

    def mask(self, visible):
        if not self.additive:
            return visible
        return torch.zeros(visible.shape, dtype=self.dtype, device=visible.device).masked_fill(
            ~visible, torch.finfo(self.dtype).min)

    def __call__(self, ids, pos, mask, ctx, keep, *, return_kv: bool = False):
        from transformers import DynamicCache  # noqa: PLC0415

        cache = DynamicCache(ctx) if ctx is not None else (DynamicCache() if return_kv else None)
        keep_t = torch.tensor(keep if keep else [0], device=ids.device)
        kwargs = {self.cache_arg: cache} if cache is not None else {}
        out = self.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=cache is not None,
                         logits_to_keep=keep_t, **kwargs)
        logits = out.logits[0] if keep else out.logits[0, :0]
        if not return_kv:
            return logits
        return logits, [(layer.keys, layer.values) for layer in cache.layers]


def score_encoded(model, pairs: Sequence[EncodedPair], *, max_batch_tokens: int = 1024,
                  progress: bool = False) -> list[LogProb]:
    """log p of each pair's response tokens; pairs that share a prompt share its computation (score_sequences)."""
    scores = score_sequences(model, [p.input_ids for p in pairs], [p.n_response for p in pairs],
                             max_batch_tokens=max_batch_tokens, progress=progress)
    return [LogProb(s.sum, p.n_response) for s, p in zip(scores, pairs)]


SCORE_CHUNK = 16   # items per cached chunk of score_responses: a few minutes of work at 1.5B on 2 CPU cores


def score_responses(model, tokenizer, items: Sequence[tuple[list[Message], str]], *,
                    cache: GenerationCache | None = None, identity: dict | None = None,
                    max_batch_tokens: int = 1024, progress: bool = False, chunk: int = SCORE_CHUNK,
                    on_chunk: Callable[[int, int], None] | None = None) -> list[LogProb]:
    """log p(response | prompt) for (messages, response) pairs; cached when `cache` and `identity` are given.

    Scored in chunks of about `chunk` items, each cut where the prompt changes (pairs of one prompt share its
    computation) and at the same places whatever is cached, each chunk cached as it finishes: a scoring killed
    midway resumes at its first unfinished chunk with the numbers an uninterrupted run gives. `on_chunk(done,
    total)` counts items."""
    prompts = [tokenizer.apply_chat_template(m, tokenize=False) for m, _ in items]
    keys = [cache_key(identity or {}, {"kind": "logp"}, "logp", t + "\x00" + r) for t, (_, r) in zip(prompts, items)]
    shard = f"logp-{(identity or {}).get('model', 'x')[:16]}"
    found = cache.get_many(shard, set(keys)) if cache is not None and identity else {}
    bounds = [0]
    for i in range(1, len(items)):
        if i - bounds[-1] >= chunk and prompts[i] != prompts[i - 1]:
            bounds.append(i)
    bounds.append(len(items))
    for lo, hi in zip(bounds, bounds[1:]):
        todo = [i for i in range(lo, hi) if keys[i] not in found]
        if todo:
            pairs = [encode_pair(tokenizer, items[i][0], items[i][1]) for i in todo]
            scores = score_encoded(model, pairs, max_batch_tokens=max_batch_tokens, progress=progress)
            new = {keys[i]: {"sum": s.sum, "n_tokens": s.n_tokens} for i, s in zip(todo, scores)}
            if cache is not None and identity:
                cache.put_many(shard, new)
            found.update(new)
        if on_chunk is not None:
            on_chunk(hi, len(items))
    return [LogProb(found[k]["sum"], found[k]["n_tokens"]) for k in keys]
