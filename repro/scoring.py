"""Log-probabilities of responses under a model: log p(response | prompt), summed and per token.

Pairs are tokenized by repro.chat.encode_pair, the same function the training core uses, so "log p of a target" here
is exactly the quantity training pushes up (end-of-turn token included).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from repro.cache import GenerationCache, cache_key
from repro.chat import EncodedPair, Message, encode_pair


@dataclass(frozen=True)
class LogProb:
    sum: float
    n_tokens: int

    @property
    def per_token(self) -> float:
        return self.sum / self.n_tokens

    def to_dict(self) -> dict:
        return {"sum": self.sum, "per_token": self.per_token, "n_tokens": self.n_tokens}


def _batches(order: list[int], lengths: list[int], max_tokens: int):
    batch: list[int] = []
    longest = 0
    for i in order:
        longest_if = max(longest, lengths[i])
        if batch and longest_if * (len(batch) + 1) > max_tokens:
            yield batch
            batch, longest_if = [], lengths[i]
        batch.append(i)
        longest = longest_if
    if batch:
        yield batch


def score_encoded(model, pairs: Sequence[EncodedPair], *, max_batch_tokens: int = 8192, pad_id: int = 0,
                  progress: bool = False) -> list[LogProb]:
    import torch  # noqa: PLC0415
    from tqdm.auto import tqdm  # noqa: PLC0415

    device = next(model.parameters()).device
    lengths = [len(p.input_ids) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
    out: list[LogProb | None] = [None] * len(pairs)
    bar = tqdm(total=len(pairs), desc="log p", unit="seq", disable=not progress, leave=False)
    for batch in _batches(order, lengths, max_batch_tokens):
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            ids[row, : lengths[i]] = torch.tensor(pairs[i].input_ids)
            mask[row, : lengths[i]] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        token_logp = logp.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()
        for row, i in enumerate(batch):
            start, end = pairs[i].prompt_len - 1, lengths[i] - 1   # position t predicts token t+1
            out[i] = LogProb(float(token_logp[row, start:end].sum()), end - start)
        bar.update(len(batch))
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
        scores = score_encoded(model, pairs, max_batch_tokens=max_batch_tokens,
                               pad_id=tokenizer.pad_token_id or 0, progress=progress)
        new = {keys[i]: {"sum": s.sum, "n_tokens": s.n_tokens} for i, s in zip(todo, scores)}
        if cache is not None and identity:
            cache.put_many(shard, new)
        found.update(new)
    return [LogProb(found[k]["sum"], found[k]["n_tokens"]) for k in keys]
