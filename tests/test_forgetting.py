"""Forgetting signals (evals/forgetting.py) on the tiny model: the per-item progress callback reports every item
once, in order, and leaves the numbers as they are without it."""
from __future__ import annotations

import pytest

from evals.forgetting import forgetting_signal, kl_on_texts
from repro.runtime import models


@pytest.fixture(scope="module")
def tuned_and_tok():
    import torch
    from peft import LoraConfig, get_peft_model

    base, tok = models.load("tiny", device="cpu")
    tuned = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():                   # a nonzero adapter: KL(base || tuned) > 0
        for name, p in tuned.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return tuned.eval(), tok


def test_forgetting_signal_reports_each_prompt_and_keeps_its_numbers(tuned_and_tok):
    tuned, tok = tuned_and_tok
    prompts = [[{"role": "user", "content": f"question {i} " * (i + 1)}] for i in range(3)]
    own, gold = ["an answer", "another one", "a third"], ["gold one", "gold two", "gold three"]
    seen: list[tuple[int, int]] = []
    with_cb = forgetting_signal(tuned, tok, prompts, own, gold, on_item=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert with_cb == forgetting_signal(tuned, tok, prompts, own, gold)
    assert with_cb["kl_base_tuned_per_token"] > 0


def test_kl_on_texts_reports_each_text_and_keeps_its_numbers(tuned_and_tok):
    tuned, tok = tuned_and_tok
    texts = ["The cat sat on the mat.", "x", "Two plus two is four, said the model."]
    seen: list[tuple[int, int]] = []
    with_cb = kl_on_texts(tuned, tok, texts, on_item=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert with_cb == kl_on_texts(tuned, tok, texts)
    assert with_cb["kl_base_tuned_per_token"] > 0
