"""Exact token alignment on every chat-template family the suite claims: training and scoring (repro.runtime.chat.encode_pair)
encode exactly the tokens a model generates for a response after the generation prompt, ending on the token
generation stops on, with nothing after it.

The oracle is independent of encode_pair's construction: the tokens a model was tuned to produce for a reply are
those of its own template's rendering of the conversation, up to and including the end-of-turn token. We take those
tokens as "the generation", decode them the way the generator does (repro.runtime.generate: skip special tokens), and
require encode_pair(prompt, decoded text) to give back exactly prompt + those tokens.

Templates are the public tokenizer_config.json chat templates, written in here verbatim; tokenizers are trained
in-process with `tokenizers` (byte-level BPE for ChatML / Llama-3, a sentencepiece-style "▁" BPE for Mistral /
Llama-2 / Gemma), plus the real SmolLM2 tokenizer, and the real SmolLM2 generating.
"""
from __future__ import annotations

import pytest

from repro.runtime.chat import TemplateAlignmentError, encode_pair, encode_prompt, render_prompt

# --- templates (verbatim from the models' tokenizer_config.json) -------------------------------------------------

# mistralai/Mistral-7B-Instruct-v0.2 (the `paper` preset's model; current tokenizer_config.json)
MISTRAL_V02 = (
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n"
    "{{- bos_token }}\n{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n"
    "        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n"
    "        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n"
    "    {%- else %}\n        {{- raise_exception('Only user and assistant roles are supported, with the exception of "
    "an initial optional system message!') }}\n    {%- endif %}\n{%- endfor %}\n")

# meta-llama/Llama-2-7b-chat-hf
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

# google/gemma-2-2b-it (and gemma-7b-it)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

# Qwen/Qwen2.5-Coder-1.5B-Instruct (the `small` preset's model), without its tool-calling branches, which
# messages without tools never reach
QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}\n    {{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}\n{%- else %}\n    {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are "
    "a helpful assistant.<|im_end|>\\n' }}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or (message.role == "
    "\"assistant\" and not message.tool_calls) %}\n        {{- '<|im_start|>' + message.role + '\\n' + "
    "message.content + '<|im_end|>' + '\\n' }}\n    {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n")

CORPUS = [
    "The answer is 5.", "Natalia sold 48 clips in April and half as many in May, so 48 / 2 = 24 clips in May.",
    "def add(a, b):\n    return a + b", "What is 2 + 3? Answer with a number.", "Read the passage and answer.",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", "system user assistant model",
    "  indented   spaces and\n\nnew lines\n", "x marks the box", "She has 3 apples; he has 12. Together: 15 apples.",
] * 20


def _train(kind: str, specials: list[str]):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: PLC0415

    alphabet = sorted(set("".join(CORPUS)) | set("▁"))
    if kind == "bytelevel":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:   # sentencepiece-style, as in Mistral's / Llama-2's (prepend "▁") and Gemma's (no prepend) tokenizer.json
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
        replace = normalizers.Replace(" ", "▁")
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), replace]) if kind == "spm" else replace
        steps = [decoders.Replace("▁", " "), decoders.Fuse()]
        tok.decoder = decoders.Sequence(steps + ([decoders.Strip(" ", 1, 0)] if kind == "spm" else []))
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def _hf(kind: str, template: str, *, bos: str | None, eos: str, specials: list[str], name: str):
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415

    backend = _train(kind, specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                  unk_token="<unk>" if "<unk>" in specials else None,
                                  additional_special_tokens=[s for s in specials if s not in (bos, eos, "<unk>")])
    tok.chat_template = template
    tok.name_or_path = name
    return tok


FAMILIES = {
    "chatml-qwen2.5": dict(kind="bytelevel", template=QWEN25, bos=None, eos="<|im_end|>",
                           specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], end="<|im_end|>"),
    "mistral-v0.2": dict(kind="spm", template=MISTRAL_V02, bos="<s>", eos="</s>", specials=["<unk>", "<s>", "</s>"],
                         end="</s>"),
    "llama-2": dict(kind="spm", template=LLAMA2, bos="<s>", eos="</s>", specials=["<unk>", "<s>", "</s>"], end="</s>"),
    "llama-3": dict(kind="bytelevel", template=LLAMA3, bos="<|begin_of_text|>", eos="<|eot_id|>",
                    specials=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>"], end="<|eot_id|>"),
    "gemma": dict(kind="spm-gemma", template=GEMMA, bos="<bos>", eos="<eos>",
                  specials=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
                  end="<end_of_turn>"),
}

RESPONSES = ["The answer is 5.", "48 / 2 = 24 clips in May.\nThe answer is 24.", "def add(a, b):\n    return a + b",
             "x", "She has 3 apples;   he has 12."]
MESSAGES = [{"role": "user", "content": "What is 2 + 3? Answer with a number."}]


@pytest.fixture(scope="module", params=sorted(FAMILIES) + ["chatml-smollm2"])
def family(request, smollm2_dir):
    if request.param == "chatml-smollm2":
        from repro.runtime import models  # noqa: PLC0415

        return request.param, models.load_tokenizer(str(smollm2_dir)), "<|im_end|>"
    spec = dict(FAMILIES[request.param])
    end = spec.pop("end")
    return request.param, _hf(**spec, name=request.param), end


def template_generation(tok, messages, response, end_token) -> list[int]:
    """The tokens the model was tuned to generate for `response`: its template's rendering of the reply, tokenized
    with the whole conversation, from the end of the generation prompt up to and including the end-of-turn token."""
    prompt_ids = tok(render_prompt(tok, messages), add_special_tokens=False)["input_ids"]
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    ids = tok(full, add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt_ids)] == prompt_ids
    rest = ids[len(prompt_ids):]
    end_id = tok.convert_tokens_to_ids(end_token)
    return rest[:rest.index(end_id) + 1]


@pytest.mark.parametrize("response", RESPONSES)
def test_encode_pair_reproduces_the_generated_tokens(family, response):
    name, tok, end_token = family
    generated = template_generation(tok, MESSAGES, response, end_token)
    text = tok.decode(generated, skip_special_tokens=True)     # what repro.runtime.generate hands back
    pair = encode_pair(tok, MESSAGES, text)
    prompt_ids = encode_prompt(tok, MESSAGES)
    assert pair.input_ids[:pair.prompt_len] == prompt_ids, name
    assert pair.input_ids[pair.prompt_len:] == generated, (
        f"{name}: trained {tok.convert_ids_to_tokens(pair.input_ids[pair.prompt_len:])} but the model generates "
        f"{tok.convert_ids_to_tokens(generated)}")
    assert pair.input_ids[-1] == tok.convert_tokens_to_ids(end_token)
    # scoring encodes through the same function; the trained tokens are what the labels keep
    assert pair.labels()[pair.prompt_len:] == generated


def test_sentencepiece_families_train_the_leading_space_token(family):
    """Mistral-v0.2 / Llama-2 write ' ' + reply: the model generates '▁The', never 'The' glued to '[/INST]'."""
    name, tok, _ = family
    pair = encode_pair(tok, MESSAGES, "The answer is 5.")
    first = tok.convert_ids_to_tokens(pair.input_ids[pair.prompt_len])
    if name in ("mistral-v0.2", "llama-2"):
        assert first.startswith("▁"), (name, first)
    else:
        assert not first.startswith(("▁", "Ġ")), (name, first)


def test_nothing_after_the_end_of_turn_token(family):
    """ChatML and Gemma write a newline after the end token, Llama-2 a space before it: neither is generated."""
    name, tok, end_token = family
    pair = encode_pair(tok, MESSAGES, "The answer is 5.")
    end_id = tok.convert_tokens_to_ids(end_token)
    assert pair.input_ids[-1] == end_id and end_id not in pair.input_ids[pair.prompt_len:-1], name
    assert tok.decode(pair.input_ids[pair.prompt_len:-1], skip_special_tokens=True) == "The answer is 5."


def test_generator_stops_on_the_templates_end_token(family):
    from repro.runtime.generate import _end_of_turn_ids  # noqa: PLC0415

    name, tok, end_token = family
    assert _end_of_turn_ids(tok) == {tok.convert_tokens_to_ids(end_token)}, name


@pytest.mark.parametrize("template,why", [
    ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] | upper + '</s>' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}", "rewrites the assistant's reply"),
    ("{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + '\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}", "no special end-of-turn token"),
    ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'Answer: ' + m['content'] + '</s>' }}{% else %}"
     "{{ m['content'] }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ ' ' }}{% endif %}",
     "does not start with the generation prompt"),
])
def test_unalignable_templates_raise_naming_the_template(template, why):
    tok = _hf("spm", template, bos="<s>", eos="</s>", specials=["<unk>", "<s>", "</s>"], name="odd-template")
    with pytest.raises(TemplateAlignmentError, match=f"odd-template.*{why}"):
        encode_pair(tok, MESSAGES, "The answer is 5.")


def test_real_smollm2_generation_is_reproduced_token_for_token(smollm2_dir):
    """The real model's greedy tokens, decoded as the generator decodes them, encode back to the same tokens."""
    import torch  # noqa: PLC0415

    from repro.runtime import models  # noqa: PLC0415

    model, tok = models.load(str(smollm2_dir))
    prompts = [[{"role": "user", "content": "What is 2 + 3? Answer in one sentence."}],
               [{"role": "user", "content": "Write a Python function that adds two numbers."}]]
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    for messages in prompts:
        prompt_ids = encode_prompt(tok, messages)
        with torch.inference_mode():
            out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=48, do_sample=False,
                                 eos_token_id=end_id, pad_token_id=tok.pad_token_id or end_id)
        generated = out[0, len(prompt_ids):].tolist()
        if generated[-1] != end_id:
            generated = generated[:-1]          # a reply cut by the cap: compare the tokens before the cut
            text = tok.decode(generated, skip_special_tokens=True)
            assert encode_pair(tok, messages, text).input_ids[len(prompt_ids):-1] == generated
            continue
        text = tok.decode(generated, skip_special_tokens=True)
        assert encode_pair(tok, messages, text).input_ids == prompt_ids + generated
