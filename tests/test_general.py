"""Tests for evals.benchmarks: the local-file lm-eval tasks, seeded subsampling, PEFT models, and an independent
check of the HellaSwag numbers on the real SmolLM2-135M-Instruct."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tolerance import assert_close

from repro.runtime.models import chat_template_sha

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from evals.benchmarks import (  # noqa: E402
    BENCHMARKS,
    MMLU_SUBJECTS,
    TASK_DIR,
    BenchmarkSpec,
    evaluate_benchmarks,
    select_items,
    select_stratified_items,
    task_manager,
)

SIZES = {  # items per benchmark in the shared data files
    "mmlu": 14042, "mmlu_5shot": 14042, "truthfulqa_mc1": 817, "truthfulqa_mc2": 817,
    "hellaswag": 10042, "winogrande": 1267, "arc_challenge": 1172, "arc_easy": 2376, "piqa": 1838,
}
LIMIT = 6
SEED = 1234
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ---------------------------------------------------------------------------------------------- tiny model
def _training_texts(data_dir: Path, per_file: int = 300) -> list[str]:
    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)

    texts = []
    for spec in BENCHMARKS.values():
        for rel in spec.data_files:
            with open(data_dir / rel, encoding="utf-8") as f:
                for _, line in zip(range(per_file), f):
                    texts.extend(strings(json.loads(line)))
    return texts


@pytest.fixture(scope="module")
def tiny_tokenizer(data_dir):
    """A byte-level BPE (vocab 1024) trained in a second on benchmark text, with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    tok.train_from_iterator(_training_texts(data_dir), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    return fast


def _tiny_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
        vocab_size=vocab_size, max_position_embeddings=4096, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    return _tiny_model(len(tiny_tokenizer))


def _eval(model, tok, data_dir, specs, **kw):
    kw.setdefault("seed", SEED)
    return evaluate_benchmarks(model, tok, specs, data_dir=data_dir, batch_size=8, max_length=1024, **kw)


@pytest.fixture(scope="module")
def tiny_result(tiny_model, tiny_tokenizer, data_dir):
    specs = [BenchmarkSpec(name, LIMIT) for name in BENCHMARKS]
    return _eval(tiny_model, tiny_tokenizer, data_dir, specs)


# ------------------------------------------------------------------------------------------ item selection
def test_select_items_seeded_nested_and_complete():
    a = select_items(1000, 20, seed=1, key="x")
    assert a == select_items(1000, 20, seed=1, key="x") == sorted(set(a)) and len(a) == 20
    assert a != select_items(1000, 20, seed=2, key="x")
    assert a != select_items(1000, 20, seed=1, key="y")
    assert set(a) <= set(select_items(1000, 50, seed=1, key="x"))  # nested
    assert a != list(range(20))  # not "first N"
    assert select_items(7, None, seed=1, key="x") == list(range(7)) == select_items(7, 99, seed=1, key="x")
    with pytest.raises(ValueError):
        select_items(7, 0, seed=1, key="x")


def test_select_stratified_items_even_and_capped():
    sizes = {f"s{i}": 10 + i for i in range(57)}
    sel = select_stratified_items(sizes, 200, seed=3, key="mmlu")
    counts = [len(v) for v in sel.values()]
    assert sum(counts) == 200 and max(counts) - min(counts) <= 1 and len(sel) == 57
    assert sel == select_stratified_items(sizes, 200, seed=3, key="mmlu")
    assert sel != select_stratified_items(sizes, 200, seed=4, key="mmlu")
    small = select_stratified_items(sizes, 5, seed=3, key="mmlu")
    assert sum(len(v) for v in small.values()) == 5 and all(len(v) == 1 for v in small.values())
    capped = select_stratified_items({"a": 2, "b": 100, "c": 100}, 60, seed=0, key="k")
    assert {k: len(v) for k, v in capped.items()} == {"a": 2, "b": 29, "c": 29}
    full = select_stratified_items({"a": 2, "b": 3}, None, seed=0, key="k")
    assert full == {"a": [0, 1], "b": [0, 1, 2]}


# ---------------------------------------------------------------------------------------------- task YAMLs
def test_yamls_mirror_lm_eval_builtins():
    """Prompt, target, choices and metrics are lm-eval's own (only the data source differs)."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    builtin = Path(lm_eval.__file__).parent / "tasks"
    pairs = {
        "s3ft_hellaswag.yaml": "hellaswag/hellaswag.yaml",
        "s3ft_winogrande.yaml": "winogrande/default.yaml",
        "s3ft_arc_challenge.yaml": "arc/arc_challenge.yaml",
        "s3ft_arc_easy.yaml": "arc/arc_easy.yaml",
        "s3ft_piqa.yaml": "piqa/piqa.yaml",
        "s3ft_truthfulqa_mc1.yaml": "truthfulqa/truthfulqa_mc1.yaml",
        "s3ft_truthfulqa_mc2.yaml": "truthfulqa/truthfulqa_mc2.yaml",
        "s3ft_mmlu_anatomy.yaml": "mmlu/default/mmlu_anatomy.yaml",
    }
    keys = ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "metric_list", "num_fewshot",
            "description", "target_delimiter", "fewshot_delimiter", "fewshot_config")
    for ours, theirs in pairs.items():
        a = load_yaml(TASK_DIR / ours, resolve_func=False)
        b = load_yaml(builtin / theirs, resolve_func=False)
        for k in keys:
            va, vb = a.get(k), b.get(k)
            if ours.startswith("s3ft_winogrande") and k.startswith("doc_to"):
                assert va.endswith("/utils.winogrande_" + k), (ours, k, va)  # checked below
                continue
            assert va == vb, (ours, k, va, vb)
        assert a["dataset_path"] == "json" and a["dataset_kwargs"]["data_files"]
        assert b["metadata"]["version"] == a["metadata"]["version"]
    # the !function helpers are lm-eval's own functions
    ours = load_yaml(TASK_DIR / "s3ft_winogrande.yaml")
    for k in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        assert (ours[k].__module__, ours[k].__name__) == ("lm_eval.tasks.winogrande.preprocess_winogrande", k)
    mc2 = load_yaml(TASK_DIR / "s3ft_truthfulqa_mc2.yaml")["process_results"]
    assert (mc2.__module__, mc2.__name__) == ("lm_eval.tasks.truthfulqa.utils", "process_results_mc2")
    five = load_yaml(TASK_DIR / "s3ft_mmlu_5shot_anatomy.yaml", resolve_func=False)
    assert five["num_fewshot"] == 5 and five["fewshot_split"] == "dev" and five["fewshot_config"]["sampler"] == "first_n"


def test_task_manager_groups_and_mmlu_prompts(data_dir):
    tm = task_manager(data_dir)
    subjects = set()
    with open(data_dir / "mmlu" / "test.jsonl", encoding="utf-8") as f:
        for line in f:
            subjects.add(json.loads(line)["subject"])
    assert subjects == set(MMLU_SUBJECTS) and len(subjects) == 57
    expected = {b.task for b in BENCHMARKS.values() if not b.subtask_prefix} | {
        b.subtask_prefix + s for b in BENCHMARKS.values() if b.subtask_prefix for s in MMLU_SUBJECTS}
    assert set(tm.all_subtasks) == expected  # templates are not tasks; nothing else is defined
    for group in ("s3ft_mmlu", "s3ft_mmlu_5shot"):
        loaded = tm.load([group])
        assert len(loaded["tasks"]) == 57 and group in loaded["groups"]
    task = tm.load(["s3ft_mmlu_5shot_anatomy"])["tasks"]["s3ft_mmlu_5shot_anatomy"]
    dev = [json.loads(x) for x in open(data_dir / "mmlu" / "dev.jsonl", encoding="utf-8")]
    dev = [d for d in dev if d["subject"] == "anatomy"]
    doc = task.eval_docs[0]
    ctx = task.fewshot_context(doc, num_fewshot=5)
    letters = "ABCD"
    shots = [
        f"{d['question'].strip()}\nA. {d['choices'][0]}\nB. {d['choices'][1]}\nC. {d['choices'][2]}\n"
        f"D. {d['choices'][3]}\nAnswer: {letters[d['answer']]}" for d in dev[:5]
    ]
    query = (f"{doc['question'].strip()}\nA. {doc['choices'][0]}\nB. {doc['choices'][1]}\nC. {doc['choices'][2]}\n"
             f"D. {doc['choices'][3]}\nAnswer:")
    head = "The following are multiple choice questions (with answers) about anatomy.\n\n"
    assert ctx == head + "\n\n".join(shots) + "\n\n" + query
    arc = tm.load(["s3ft_arc_challenge"])["tasks"]["s3ft_arc_challenge"]
    numeric = [d for d in arc.eval_docs if d["answerKey"] in "1234"]
    assert numeric, "ARC-Challenge test has items labelled 1..4"
    d = numeric[0]
    assert arc.doc_to_target(d) == d["choices"]["label"].index(d["answerKey"])


# ------------------------------------------------------------------------------------------- tiny model runs
def test_every_benchmark_structure(tiny_result, tiny_tokenizer, data_dir):
    res = tiny_result
    json.dumps(res)  # serialisable
    assert set(res["results"]) == set(BENCHMARKS) == set(res["samples"]) == set(res["n-samples"])
    for name, bench in BENCHMARKS.items():
        assert res["n-samples"][name] == {"original": SIZES[name], "effective": LIMIT}
        items = res["samples"][name]
        assert len(items) == LIMIT and len({it["key"] for it in items}) == LIMIT
        primary = res["primary_metric"][name]
        metric = primary.split(",")[0]
        assert primary == bench.primary_metric and primary in res["results"][name]
        assert f"{metric}_stderr,none" in res["results"][name]
        vals = [it[metric] for it in items]
        assert all(0.0 <= v <= 1.0 for v in vals)
        assert res["results"][name][primary] == pytest.approx(np.mean(vals), abs=1e-9)
        cfg = res["configs"][name]
        assert cfg["seed"] == SEED and cfg["limit"] == LIMIT and cfg["num_fewshot"] == bench.default_num_fewshot
        assert res["n-shot"][name] == bench.default_num_fewshot
        if bench.subtask_prefix:
            assert {(s, i) for s, idx in cfg["items"].items() for i in idx} == {
                (it["subject"], it["doc_id"]) for it in items}
            assert all(it["key"] == f"{it['subject']}/{it['doc_id']}" for it in items)
        else:
            assert cfg["items"] == sorted(it["doc_id"] for it in items)
    # mmlu items: `row` is the item's line in mmlu/test.jsonl
    lines = open(data_dir / "mmlu" / "test.jsonl", encoding="utf-8").read().splitlines()
    for it in res["samples"]["mmlu"]:
        assert json.loads(lines[it["row"]])["subject"] == it["subject"]
    # shared items: mmlu & mmlu_5shot, truthfulqa mc1 & mc2
    assert res["configs"]["mmlu"]["items"] == res["configs"]["mmlu_5shot"]["items"]
    assert res["configs"]["truthfulqa_mc1"]["items"] == res["configs"]["truthfulqa_mc2"]["items"]
    assert 0.0 < res["results"]["truthfulqa_mc2"]["acc,none"] < 1.0  # a probability mass, not 0/1
    assert res["chat_template"] is False
    assert res["chat_template_sha"] == hashlib.sha256(CHATML.encode()).hexdigest()
    assert res["chat_template_sha"] == chat_template_sha(tiny_tokenizer)
    for rel, sha in res["data_sha256"].items():
        assert sha == hashlib.sha256((data_dir / rel).read_bytes()).hexdigest()
    assert set(res["data_sha256"]) == {f for b in BENCHMARKS.values() for f in b.data_files}
    assert res["lm_eval_version"] == "0.4.13" and res["total_evaluation_time_seconds"] > 0


def test_items_deterministic_per_seed(tiny_model, tiny_tokenizer, tiny_result, data_dir):
    specs = [BenchmarkSpec("winogrande", LIMIT), BenchmarkSpec("mmlu", LIMIT)]
    again = _eval(tiny_model, tiny_tokenizer, data_dir, specs)
    for name in ("winogrande", "mmlu"):
        assert again["configs"][name]["items"] == tiny_result["configs"][name]["items"]
        assert again["samples"][name] == tiny_result["samples"][name]  # same items, same scores
    other = _eval(tiny_model, tiny_tokenizer, data_dir, specs, seed=SEED + 1)
    for name in ("winogrande", "mmlu"):
        assert other["configs"][name]["items"] != tiny_result["configs"][name]["items"]
        assert other["configs"][name]["items_sha256"] != tiny_result["configs"][name]["items_sha256"]


def test_invalid_specs_rejected(tiny_model, tiny_tokenizer, data_dir):
    for specs, err in (
        ([BenchmarkSpec("nope", 3)], KeyError),
        ([BenchmarkSpec("hellaswag", 3, num_fewshot=5)], ValueError),
        ([BenchmarkSpec("winogrande", 3), BenchmarkSpec("winogrande", 4)], ValueError),
        ([BenchmarkSpec("winogrande", 0)], ValueError),
    ):
        with pytest.raises(err):
            _eval(tiny_model, tiny_tokenizer, data_dir, specs)


def test_mmlu_num_fewshot_override_and_chat_template(tiny_model, tiny_tokenizer, tiny_result, data_dir):
    res = _eval(tiny_model, tiny_tokenizer, data_dir, [BenchmarkSpec("mmlu", 3, num_fewshot=2),
                                                         BenchmarkSpec("arc_challenge", 3)],
                chat_template=True, return_loglikelihoods=True)
    assert res["n-shot"]["mmlu"] == 2 and res["configs"]["mmlu"]["num_fewshot"] == 2
    assert res["chat_template"] is True
    plain = _eval(tiny_model, tiny_tokenizer, data_dir, [BenchmarkSpec("arc_challenge", 3)],
                  return_loglikelihoods=True)
    assert [it["doc_id"] for it in res["samples"]["arc_challenge"]] == [
        it["doc_id"] for it in plain["samples"]["arc_challenge"]]
    lls_chat = [it["loglikelihoods"] for it in res["samples"]["arc_challenge"]]
    lls_plain = [it["loglikelihoods"] for it in plain["samples"]["arc_challenge"]]
    assert lls_chat != lls_plain  # the template did change the prompts


def _lls(res, names):
    return np.concatenate([np.array(it["loglikelihoods"]) for n in names for it in res["samples"][n]])


def test_peft_model_identity_then_perturbed(tiny_model, tiny_tokenizer, data_dir):
    """A fresh LoRA (B=0) scores exactly like the base; perturbing B changes the scores, and the unmerged
    adapter scores like the merged model (the adapter is applied, and applied once)."""
    from peft import LoraConfig, get_peft_model

    names = ("hellaswag", "truthfulqa_mc2")
    specs = [BenchmarkSpec(n, 4) for n in names]
    base = _eval(tiny_model, tiny_tokenizer, data_dir, specs, return_loglikelihoods=True)

    peft_model = get_peft_model(
        copy.deepcopy(tiny_model), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    fresh = _eval(peft_model, tiny_tokenizer, data_dir, specs, return_loglikelihoods=True)
    assert fresh["model"]["peft"] is True and base["model"]["peft"] is False
    np.testing.assert_array_equal(_lls(fresh, names), _lls(base, names))
    for n in names:
        assert fresh["results"][n] == base["results"][n]

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 2.0)
    snapshot = {k: v.clone() for k, v in peft_model.state_dict().items() if "lora_" in k}
    peft_model.train()
    perturbed = _eval(peft_model, tiny_tokenizer, data_dir, specs, return_loglikelihoods=True)
    assert peft_model.training, "train/eval mode restored"
    assert all(torch.equal(v, peft_model.state_dict()[k]) for k, v in snapshot.items()), "adapter untouched"
    assert np.max(np.abs(_lls(perturbed, names) - _lls(base, names))) > 1e-2

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged_res = _eval(merged, tiny_tokenizer, data_dir, specs, return_loglikelihoods=True)
    assert_close(_lls(perturbed, names), _lls(merged_res, names), rel=1e-4)   # merged weights: other rounding


# ------------------------------------------------------------------------------- real model: HellaSwag check
def _preprocess(text: str) -> str:
    """HellaSwag's WikiHow clean-up (as in the HellaSwag/lm-eval reference)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


@torch.no_grad()
def _independent_hellaswag(model, tok, rows: list[dict]) -> list[dict]:
    """Log-likelihood multiple choice written directly with torch, tokenising as lm-eval does: the context is
    encoded alone, context+" "+ending together, and the continuation is the tail of the joint encoding past
    the context's length. The context is run once; its KV cache, repeated 4 times, then scores the four
    endings in one right-padded batch (padding after the real tokens cannot affect them: causal attention)."""
    out = []
    for row in rows:
        ctx = _preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
        endings = [_preprocess(e) for e in row["endings"]]
        n_sp = len(ctx) - len(ctx.rstrip())  # trailing spaces of the context belong to the continuation
        context, prefix = (ctx[:-n_sp], ctx[-n_sp:]) if n_sp else (ctx, "")
        ctx_ids = tok(context)["input_ids"]
        conts = [tok(context + prefix + " " + e)["input_ids"][len(ctx_ids):] for e in endings]
        first = model(torch.tensor([ctx_ids]), use_cache=True)
        last_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        width = max(len(c) for c in conts) - 1
        lls = [float(last_logp[c[0]]) for c in conts]
        if width > 0:
            cache = first.past_key_values
            cache.batch_repeat_interleave(len(conts))
            batch = torch.tensor([c[:-1] + [0] * (width - len(c) + 1) for c in conts])
            logp = torch.log_softmax(model(batch, past_key_values=cache).logits.float(), dim=-1)
            for j, c in enumerate(conts):
                tgt = torch.tensor(c[1:])
                lls[j] += float(logp[j, : len(tgt)].gather(1, tgt[:, None]).sum())
        gold = int(row["label"])
        lls = np.array(lls)
        chars = np.array([len(e) for e in endings], dtype=float)  # lm-eval 0.4.13 acc_norm: per character
        out.append({"lls": lls, "acc": float(np.argmax(lls) == gold), "acc_norm": float(np.argmax(lls / chars) == gold)})
    return out


def test_smollm2_hellaswag_matches_independent_scoring(smollm2_dir, data_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    res = evaluate_benchmarks(model, tok, [BenchmarkSpec("hellaswag", 20)], data_dir=data_dir, seed=SEED,
                              batch_size=8, return_loglikelihoods=True)
    items = res["samples"]["hellaswag"]
    ids = [it["doc_id"] for it in items]
    assert ids == select_items(SIZES["hellaswag"], 20, seed=SEED, key="hellaswag") and len(ids) == 20
    rows = [json.loads(x) for x in open(data_dir / "hellaswag" / "validation.jsonl", encoding="utf-8")]
    mine = _independent_hellaswag(model, tok, [rows[i] for i in ids])
    diff = max(float(np.max(np.abs(np.array(it["loglikelihoods"]) - m["lls"]))) for it, m in zip(items, mine))
    for it, m in zip(items, mine):      # two computations of the same sums: equal to rounding, scaled by magnitude
        assert_close(it["loglikelihoods"], m["lls"], rel=1e-5, floor=1e-3)
    for metric in ("acc", "acc_norm"):
        ours = float(np.mean([m[metric] for m in mine]))
        assert abs(res["results"]["hellaswag"][f"{metric},none"] - ours) < 5e-4, metric
        assert [it[metric] for it in items] == [m[metric] for m in mine]
    print(f"\nSmolLM2 hellaswag n=20: acc={res['results']['hellaswag']['acc,none']:.3f} "
          f"acc_norm={res['results']['hellaswag']['acc_norm,none']:.3f} max|dll|={diff:.2e} ({time.time() - t0:.1f}s)")
