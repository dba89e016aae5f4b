"""The one chat-template policy: how a prompt is rendered for generation and how (prompt, response) becomes tokens.

Generation, training and log-probability scoring all go through these two functions, so a model is trained on
exactly the token sequence it would have produced, and the prompt/response boundary is a token index computed from
the template, never found by searching the response string.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

Message = dict[str, str]


def render_prompt(tokenizer, messages: list[Message]) -> str:
    """The chat-templated prompt text, ending where the assistant's reply starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template; the suite needs an instruct model with one")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, messages: list[Message]) -> list[int]:
    # The rendered text already holds any BOS the template wants; adding special tokens again would double it.
    return tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]


@dataclass(frozen=True)
class EncodedPair:
    input_ids: list[int]
    prompt_len: int          # tokens [0, prompt_len) are the prompt; the rest is the response, end-of-turn included

    @property
    def n_response(self) -> int:
        return len(self.input_ids) - self.prompt_len

    def labels(self) -> list[int]:
        return [-100] * self.prompt_len + self.input_ids[self.prompt_len:]


_warned_fallback = False


def _end_of_turn(tokenizer, messages: list[Message], prompt_text: str, response: str) -> str:
    """What the template writes after the response (e.g. "<|im_end|>"), cut after the EOS token so the model is
    trained to stop exactly where generation stops."""
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    tail = full[len(prompt_text):] if full.startswith(prompt_text) else ""
    eos = tokenizer.eos_token or ""
    if tail.startswith(response):
        suffix = tail[len(response):]
        if eos and eos in suffix:
            suffix = suffix[: suffix.index(eos) + len(eos)]
        return suffix
    # Templates that rewrite the reply (strip it, drop reasoning) leave no clean suffix; EOS is the honest end.
    return eos


def encode_pair(tokenizer, messages: list[Message], response: str) -> EncodedPair:
    """Tokens of prompt + response + end-of-turn, and the boundary index between prompt and response."""
    global _warned_fallback
    prompt_text = render_prompt(tokenizer, messages)
    suffix = _end_of_turn(tokenizer, messages, prompt_text, response)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt_text + response + suffix, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids:
        # A merge across the boundary: keep the prompt tokens generation saw and tokenize the rest on its own.
        if not _warned_fallback:
            log.warning("tokens merge across the prompt/response boundary for this tokenizer; "
                        "encoding the response separately")
            _warned_fallback = True
        full_ids = prompt_ids + tokenizer(response + suffix, add_special_tokens=False)["input_ids"]
    pair = EncodedPair(full_ids, len(prompt_ids))
    if pair.n_response < 1:
        raise ValueError("an example has no response tokens to train on")
    return pair
