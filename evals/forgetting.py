"""Forgetting signals measured right after training.

In-task (``forgetting_signal``): a cheap, low-noise forgetting signal measured right after training
(Shenfeld et al. 2025, "RL's Razor": the KL between base and tuned model on the task's own prompts predicts
forgetting better than anything else measured).

On held-out prompts of the task:
  kl_base_tuned  = mean over the base model's own response tokens of KL(p_base || p_tuned) at that position,
                   teacher-forced on the base model's greedy answers (the base distribution's typical sequences);
  nll_gold_tuned = per-token NLL of the gold responses under the tuned model (nll_gold_base for reference).
With a LoRA adapter the base model is the same module with the adapter disabled, so nothing is loaded twice.

Cross-domain (``kl_on_texts``): the same KL(base || tuned) per token, teacher-forced on texts of *other* domains -
benchmark items (prompt + correct answer, plain text, no chat template, as the benchmarks are scored) - where
forgetting is measured. Labelled apart from the in-task KL in results and tables.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

from repro.runtime.chat import EncodedPair, Message, encode_pair


def _logprobs(model, pair: EncodedPair):
    import torch  # noqa: PLC0415

    ids = torch.tensor([pair.input_ids], device=next(model.parameters()).device)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0, pair.prompt_len - 1:-1].float()
    return torch.log_softmax(logits, dim=-1), ids[0, pair.prompt_len:]


def forgetting_signal(tuned, tokenizer, prompts: Sequence[list[Message]], base_responses: Sequence[str],
                      gold_responses: Sequence[str], *, base=None,
                      base_truncated: Sequence[bool] | None = None,
                      on_item: Callable[[int, int], None] | None = None) -> dict:
    """`tuned` is a PeftModel (base = adapter disabled) or a full model with `base` given separately.
    `base_truncated[i]`: the base answer stopped on the token cap; it is scored without an end-of-turn token the
    model never produced. `on_item(done, total)` after each prompt: four forward passes each, minutes at 1.5B on CPU."""
    if base is None and not hasattr(tuned, "disable_adapter"):
        raise ValueError("a fully fine-tuned model needs the base model passed as `base`")

    def base_ctx():
        return tuned.disable_adapter() if base is None else contextlib.nullcontext()

    base_model = tuned if base is None else base
    kl_sum = kl_tokens = 0.0
    nll_t = nll_b = gold_tokens = 0.0
    cut = list(base_truncated) if base_truncated is not None else [False] * len(prompts)
    for i, (messages, own, gold, was_cut) in enumerate(zip(prompts, base_responses, gold_responses, cut)):
        pair = encode_pair(tokenizer, messages, own)
        if was_cut:
            pair = EncodedPair(pair.input_ids[:-1], pair.prompt_len)
        with base_ctx():
            lp_base, _ = _logprobs(base_model, pair)
        lp_tuned, _ = _logprobs(tuned, pair)
        kl_sum += float((lp_base.exp() * (lp_base - lp_tuned)).sum())
        kl_tokens += lp_base.shape[0]
        gpair = encode_pair(tokenizer, messages, gold)
        lp_t, tgt = _logprobs(tuned, gpair)
        with base_ctx():
            lp_b, _ = _logprobs(base_model, gpair)
        nll_t -= float(lp_t.gather(-1, tgt[:, None]).sum())
        nll_b -= float(lp_b.gather(-1, tgt[:, None]).sum())
        gold_tokens += tgt.shape[0]
        if on_item is not None:
            on_item(i + 1, len(prompts))
    return {"kl_base_tuned_per_token": kl_sum / kl_tokens, "nll_gold_tuned_per_token": nll_t / gold_tokens,
            "nll_gold_base_per_token": nll_b / gold_tokens, "n_prompts": len(prompts),
            "n_kl_tokens": int(kl_tokens), "n_gold_tokens": int(gold_tokens)}


def kl_on_texts(tuned, tokenizer, texts: Sequence[str], *, base=None, max_tokens: int = 1024,
                on_item: Callable[[int, int], None] | None = None) -> dict:
    """Mean KL(p_base || p_tuned) over every next-token position of each plain text (the first token has no
    prediction; texts are cut to ``max_tokens``). ``tuned``, ``base`` and ``on_item`` as in
    :func:`forgetting_signal`."""
    import torch  # noqa: PLC0415

    if base is None and not hasattr(tuned, "disable_adapter"):
        raise ValueError("a fully fine-tuned model needs the base model passed as `base`")
    base_model = tuned if base is None else base
    device = next(tuned.parameters()).device
    kl_sum = tokens = 0.0
    for i, text in enumerate(texts, 1):
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_tokens].to(device)
        if ids.shape[1] >= 2:                   # the first token has no prediction
            with torch.inference_mode():
                with (tuned.disable_adapter() if base is None else contextlib.nullcontext()):
                    lp_b = torch.log_softmax(base_model(input_ids=ids).logits[0, :-1].float(), dim=-1)
                lp_t = torch.log_softmax(tuned(input_ids=ids).logits[0, :-1].float(), dim=-1)
            kl_sum += float((lp_b.exp() * (lp_b - lp_t)).sum())
            tokens += lp_b.shape[0]
        if on_item is not None:
            on_item(i, len(texts))
    return {"kl_base_tuned_per_token": kl_sum / tokens if tokens else None, "n_texts": len(texts),
            "n_tokens": int(tokens),
            "texts": "benchmark items (prompt + correct answer), plain text, no chat template"}
