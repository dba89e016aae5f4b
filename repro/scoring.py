"""Log-probabilities of responses under a model: log p(response | prompt), summed and per token.

Pairs are tokenized by repro.chat.encode_pair, the same function the training core uses, so "log p of a target" here
is exactly the quantity training pushes up (end-of-turn token included).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from repro.cache import GenerationCache, cache_key
from repro.chat import EncodedPair, Message, encode_pair
from repro.packing import greedy_groups, packed_batch, packed_logits


@dataclass(frozen=True)
class LogProb:
    sum: float
    n_tokens: int

    @property
    def per_token(self) -> float:
        return self.sum / self.n_tokens

    def to_dict(self) -> dict:
        return {"sum": self.sum, "per_token": self.per_token, "n_tokens": self.n_tokens}


def score_encoded(model, pairs: Sequence[EncodedPair], *, max_batch_tokens: int = 8192,
                  progress: bool = False) -> list[LogProb]:
    """log p of each pair's response tokens, in padding-free packed rows (see repro.packing)."""
    import torch  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    device = next(model.parameters()).device
    lengths = [len(p.input_ids) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
    out: list[LogProb | None] = [None] * len(pairs)
    bar = tqdm(total=len(pairs), desc="log p", unit="seq", disable=not progress, leave=False)
    for group in greedy_groups(order, lengths, max_batch_tokens):
        batch = packed_batch([pairs[i] for i in group], device)
        with torch.inference_mode():
            logp = torch.log_softmax(packed_logits(model, batch).float(), dim=-1)
        token_logp = logp.gather(-1, batch["targets"].unsqueeze(-1)).squeeze(-1).cpu()
        start = 0
        for i in group:              # kept positions come example by example, n_response of each
            n = pairs[i].n_response
            out[i] = LogProb(float(token_logp[start:start + n].sum()), n)
            start += n
        bar.update(len(group))
    bar.close()
    return out  # type: ignore[return-value]


def score_responses(model, tokenizer, items: Sequence[tuple[list[Message], str]], *,
                    cache: GenerationCache | None = None, identity: dict | None = None,
                    max_batch_tokens: int = 8192, progress: bool = False) -> list[LogProb]:
    """log p(response | prompt) for (messages, response) pairs; cached when `cache` and `identity` are given."""
    keys = [cache_key(identity or {}, {"kind": "logp"}, "logp", tokenizer.apply_chat_template(m, tokenize=False)
                      + "\x00" + r) for m, r in items]
    shard = f"logp-{(identity or {}).get('model', 'x')[:16]}"
    found = cache.get_many(shard, set(keys)) if cache is not None and identity else {}
    todo = [i for i, k in enumerate(keys) if k not in found]
    if todo:
        pairs = [encode_pair(tokenizer, items[i][0], items[i][1]) for i in todo]
        scores = score_encoded(model, pairs, max_batch_tokens=max_batch_tokens, progress=progress)
        new = {keys[i]: {"sum": s.sum, "n_tokens": s.n_tokens} for i, s in zip(todo, scores)}
        if cache is not None and identity:
            cache.put_many(shard, new)
        found.update(new)
    return [LogProb(found[k]["sum"], found[k]["n_tokens"]) for k in keys]
