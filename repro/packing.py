"""Padding-free batches, shared by the training core and log-probability scoring.

Examples are concatenated into one row whose position ids restart at every example; with no attention mask and no
KV cache, transformers builds a block-diagonal causal mask from those position ids, so examples never attend to
each other and no compute is spent on padding. Only positions that predict a response token need the LM head
(``logits_to_keep``), which on a 50k-150k vocabulary is most of the memory of a forward pass.
"""
from __future__ import annotations

from collections.abc import Sequence

from repro.chat import EncodedPair


def greedy_groups(indices: Sequence[int], lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive groups of `indices` whose lengths sum to at most `budget` (an over-long item stands alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in indices:
        if current and used + lengths[i] > budget:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        groups.append(current)
    return groups


def packed_batch(pairs: Sequence[EncodedPair], device) -> dict:
    """One row of concatenated examples: model inputs, labels (-100 on prompts) and the positions that predict a
    trained token (each example's first label is a prompt token, so no position predicts across examples)."""
    import torch  # noqa: PLC0415

    ids, pos, labels = [], [], []
    for p in pairs:
        ids += p.input_ids
        pos += range(len(p.input_ids))
        labels += p.labels()
    labels_t = torch.tensor([labels], device=device)
    keep = (labels_t[0, 1:] != -100).nonzero().squeeze(-1)
    return {"inputs": {"input_ids": torch.tensor([ids], device=device),
                       "position_ids": torch.tensor([pos], device=device)},
            "keep": keep, "targets": labels_t[0, 1:][keep]}


def packed_logits(model, batch: dict):
    """Logits at the positions that predict response tokens, shape [n_response_tokens, vocab]."""
    out = model(**batch["inputs"], use_cache=False, logits_to_keep=batch["keep"])
    return out.logits[0]
