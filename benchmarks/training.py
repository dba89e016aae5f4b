"""Training throughput: the project's training core vs a plain transformers.Trainer with padded batches.

    python -m benchmarks.training                      # SmolLM2-135M-Instruct, 16 GSM8K gold examples x 2 epochs, batch 8, CPU

Arms, on the same records (prompt = the task's training prompt, target = the gold response), tokenized by the same
function (repro.runtime.chat.encode_pair via methods.train.encode_records), in the same order (methods.train.epoch_order for
each epoch), with the same LoRA (r=8, alpha=16, dropout 0.1, q_proj+v_proj, same seed so the same initial A), the
same AdamW, learning rate, cosine schedule, warm-up, clipping, batch size and epochs:

  core         methods.train.train: padding-free packed rows of at most --max-tokens-per-micro-batch tokens
               (auto: 512 on CPU, the TrainConfig default 4096 on GPU), loss and LM head only on response tokens
  trainer      transformers.Trainer, DataCollatorForSeq2Seq (right padding, labels -100 on prompt and padding),
               one padded batch of --batch-size examples per optimiser step, full LM head, sequential sampler
  core_4096    (CPU ablation, --ablation-reps) the core with TrainConfig's default budget, 4096 tokens: one packed
               row per step here. CPU attention has no variable-length kernel, so a packed row of L tokens computes
               all L^2 attention scores and the block-diagonal mask throws the cross-example ones away; on GPU a
               large row keeps the device busy. The budget changes nothing but speed (the loss is per trained token
               of the step however examples are grouped; bits can differ with thread count and grouping)

Arms run interleaved (core, trainer, trainer, core, ...), --reps times; reported are the median trained tokens/s
(response tokens, the tokens that carry loss), seen tokens/s (all real tokens), the ratio core/trainer of the medians,
each arm's per-step loss curve and final loss, and on a GPU the MFU. MFU = 6 * N * seen tokens/s / peak, with N = all
parameters of the model (frozen base + LoRA: the usual 6N convention, as if fully fine-tuned); a LoRA-aware figure
(4N + 2*N_trainable: no weight gradients for frozen matrices) is reported beside it. Attention FLOPs are not counted.
On CPU there is no reliable peak, so the achieved GFLOP/s is compared with a dense fp32 matmul measured in-process.

Precision (``--precisions fp32,bf16-autocast,bf16``: a separate comparison, written to
benchmarks/results/training_precision_<model>.json)::

    python -m benchmarks.training --precisions fp32,bf16-autocast,bf16 --task mbpp --steps 8 --batch-size 4

The training core under each `TrainConfig.precision` (fp32; bf16 autocast over fp32 weights; bf16 frozen base
weights under autocast), on --steps optimiser steps of real training examples (gold responses) with everything
else equal, arms interleaved (rotated each repetition), --reps times, after one untimed warm-up step per arm.
Reported: median trained and seen tokens/s per arm, the speed-up over fp32, and the loss curves' agreement: per
step |loss_arm - loss_fp32| / loss_fp32 (a relative difference: losses are O(1) nats and shrink as training
goes). An arm "agrees" when every step is within --loss-rtol (default 0.02: ~5x bf16's unit roundoff 2^-8 =
0.0039, since a step's loss averages hundreds of token log-probs whose bf16 errors partly cancel, but the weights
drift apart step by step). `precision` is a recipe/training option, recorded in every train log; the default
("auto" = fp32 on CPU) changes only if an arm is faster AND agrees.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import warnings
from pathlib import Path

from benchmarks import _common as C  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)

# bf16 dense peak FLOP/s (no sparsity) by device-name substring; used only for MFU on GPUs.
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
                 "4090": 165e12, "3090": 71e12}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=C.DEFAULT_MODEL)
    p.add_argument("--task", default="gsm8k", choices=["gsm8k", "mbpp", "squad", "nq_open"])
    p.add_argument("--n", type=int, default=16, help="training examples (seeded subset of the train split)")
    p.add_argument("--seed", type=int, default=1234, help="subset seed (the presets' data_seed)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="examples per optimiser step (the presets use 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="high enough that the loss visibly moves in a few steps")
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--max-tokens-per-micro-batch", type=int, default=0,
                   help="the core arm's packing budget; 0 = auto: 512 on CPU (the setting CPU presets should use), "
                        "4096 (TrainConfig's default) on GPU")
    p.add_argument("--ablation-budget", type=int, default=4096, help="packing budget of the CPU ablation arm")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ablation-reps", type=int, default=1, help="repetitions of the core_4096 arm (CPU only)")
    p.add_argument("--data-dir", default=C.DEFAULT_DATA)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/training.json; with "
                                               "--precisions training_precision_<model>.json)")
    p.add_argument("--precisions", default=None,
                   help="comma-separated TrainConfig.precision arms (first = reference, e.g. fp32,bf16-autocast,bf16): "
                        "the precision comparison instead of core vs Trainer")
    p.add_argument("--steps", type=int, default=8, help="precision comparison: optimiser steps per run")
    p.add_argument("--no-warmup", action="store_true",
                   help="precision comparison: skip the untimed warm-up step per arm (large models on busy cores)")
    p.add_argument("--loss-rtol", type=float, default=0.02,
                   help="precision comparison: largest per-step relative loss difference from the first arm that "
                        "counts as agreeing")
    return p.parse_args(argv)


def matmul_gflops(seconds: float = 2.0) -> float:
    """Dense fp32 matmul throughput of this process right now (the CPU 'peak' MFU is compared with)."""
    import time  # noqa: PLC0415

    import torch  # noqa: PLC0415

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 1024 ** 3 * n / (time.perf_counter() - t0) / 1e9


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch  # noqa: PLC0415

    import methods.train as core  # noqa: PLC0415
    from evals.tasks import get_task  # noqa: PLC0415
    from repro.runtime import models  # noqa: PLC0415

    if args.precisions:
        return precision_main(args)
    if args.n % args.batch_size:
        raise SystemExit("--n must be a multiple of --batch-size (the Trainer arm concatenates epochs)")
    load_start = C.load()
    env = C.environment(args.model)
    task = get_task(args.task)
    examples = task.load("train", Path(args.data_dir), limit=args.n, seed=args.seed)
    records = [{"id": ex["id"], "prompt": task.train_messages(ex), "target": task.gold_response(ex)}
               for ex in examples]
    use_cuda = torch.cuda.is_available()
    budget = args.max_tokens_per_micro_batch or (4096 if use_cuda else 512)
    cfg = core.TrainConfig(finetune="lora", lora_r=8, lora_alpha=16, lora_dropout=args.lora_dropout,
                           lora_target_modules=["q_proj", "v_proj"], learning_rate=args.lr, epochs=args.epochs,
                           batch_size=args.batch_size, max_length=args.max_length,
                           max_tokens_per_micro_batch=budget, lr_scheduler="cosine",
                           warmup_ratio=0.03, weight_decay=0.0, max_grad_norm=1.0, seed=0)
    tok = models.load_tokenizer(args.model)
    pairs, data_stats = core.encode_records(tok, records, cfg.max_length)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))

    def run_core(tag: str, c=cfg, recs=records) -> dict:
        with C.Timer() as t:
            log = core.train(args.model, recs, c, work / tag, progress=False)
        return {"wall_s": log["wall_time_s"], "trained_tokens": log["trained_tokens"],
                "seen_tokens": log["seen_tokens"], "computed_tokens": log["seen_tokens"],
                "trained_tokens_per_s": log["trained_tokens_per_s"], "seen_tokens_per_s": log["seen_tokens_per_s"],
                "losses": [s["loss"] for s in log["steps"]], "final_loss": log["final_loss"],
                "micro_batch_budget": c.max_tokens_per_micro_batch, "total_params": log["total_params"],
                "trainable_params": log["trainable_params"], "process": t.record()}

    def run_trainer(tag: str) -> dict:
        import time  # noqa: PLC0415

        from peft import LoraConfig, get_peft_model  # noqa: PLC0415
        from torch.utils.data import SequentialSampler  # noqa: PLC0415
        from transformers import (  # noqa: PLC0415
            AutoModelForCausalLM,
            DataCollatorForSeq2Seq,
            PrinterCallback,
            Trainer,
            TrainingArguments,
            set_seed,
        )

        class OrderedTrainer(Trainer):
            """The core's data order: the dataset is already laid out epoch by epoch; read it in sequence."""

            def _get_train_sampler(self, *a, **k):
                return SequentialSampler(self.train_dataset)

        set_seed(cfg.seed)
        dtype = torch.bfloat16 if use_cuda else torch.float32
        model = AutoModelForCausalLM.from_pretrained(models.local_path(args.model), dtype=dtype)
        torch.manual_seed(cfg.seed)                    # the core's LoRA init: same seed, same A matrices
        with warnings.catch_warnings():                # the same harmless peft/transformers deprecation as the core
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                     lora_dropout=cfg.lora_dropout,
                                                     target_modules=list(cfg.lora_target_modules),
                                                     task_type="CAUSAL_LM"))
        order = [i for e in range(cfg.epochs) for i in core.epoch_order(len(pairs), cfg.seed, e)]
        rows = [{"input_ids": pairs[i].input_ids, "attention_mask": [1] * len(pairs[i].input_ids),
                 "labels": pairs[i].labels()} for i in order]
        total_steps = math.ceil(len(pairs) / cfg.batch_size) * cfg.epochs
        targs = TrainingArguments(
            output_dir=str(work / tag), per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1,
            num_train_epochs=1, learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=round(cfg.warmup_ratio * total_steps), weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm, optim="adamw_torch", logging_steps=1, save_strategy="no",
            report_to=[], seed=cfg.seed, disable_tqdm=True, remove_unused_columns=False,
            dataloader_num_workers=0, use_cpu=not use_cuda, bf16=use_cuda)
        tok.padding_side = "right"
        collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)
        trainer = OrderedTrainer(model=model, args=targs, train_dataset=rows, data_collator=collator)
        trainer.remove_callback(PrinterCallback)       # its per-step dicts would drown the benchmark's own lines
        with C.Timer() as t:
            t0 = time.perf_counter()
            trainer.train()
            wall = time.perf_counter() - t0
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        trained = sum(pairs[i].n_response for i in order)
        seen = sum(len(pairs[i].input_ids) for i in order)
        computed = sum(len(batch) * max(len(pairs[i].input_ids) for i in batch)
                       for batch in (order[k:k + cfg.batch_size] for k in range(0, len(order), cfg.batch_size)))
        n_total = sum(p.numel() for p in model.parameters())
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"wall_s": round(wall, 3), "trained_tokens": trained, "seen_tokens": seen, "computed_tokens": computed,
                "trained_tokens_per_s": trained / wall, "seen_tokens_per_s": seen / wall, "losses": losses,
                "final_loss": losses[-1] if losses else None, "steps_logged": len(losses),
                "total_params": n_total, "trainable_params": n_train, "process": t.record()}

    # Warm-up, not timed: one-off costs (allocator growth, kernel selection) of the first runs in this process.
    warm = core.TrainConfig(**{**cfg.to_dict(), "epochs": 1, "batch_size": 2})
    run_core("warmup", c=warm, recs=records[:2])
    ablation = core.TrainConfig(**{**cfg.to_dict(), "max_tokens_per_micro_batch": args.ablation_budget})
    ablation_arm = f"core_{args.ablation_budget}"

    peak_before = None if use_cuda else matmul_gflops()
    arms = {"core": lambda rep: run_core(f"core{rep}"), "trainer": lambda rep: run_trainer(f"trainer{rep}")}
    runs: list[dict] = []
    for rep in range(args.reps):
        order = ("core", "trainer") if rep % 2 == 0 else ("trainer", "core")
        for arm in order:
            r = arms[arm](rep)
            runs.append({"arm": arm, "rep": rep, **r})
            print(f"rep {rep} {arm:10s}: {r['trained_tokens_per_s']:.1f} trained tok/s, {r['seen_tokens_per_s']:.1f} "
                  f"seen tok/s, wall {r['wall_s']:.1f} s, final loss {r['final_loss']:.4f} "
                  f"(load {r['process']['load_before'][0]} -> {r['process']['load_after'][0]})",
                  file=sys.stderr, flush=True)
        if not use_cuda and rep < args.ablation_reps and args.ablation_budget != budget:
            r = run_core(f"ablation{rep}", c=ablation)
            runs.append({"arm": ablation_arm, "rep": rep, **r})
            print(f"rep {rep} {ablation_arm}: {r['trained_tokens_per_s']:.1f} trained tok/s, wall {r['wall_s']:.1f} s, "
                  f"final loss {r['final_loss']:.4f}", file=sys.stderr, flush=True)
    peak_after = None if use_cuda else matmul_gflops()

    summary: dict[str, dict] = {}
    for arm in ("core", "trainer", ablation_arm):
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        n_total, n_train = rs[0]["total_params"], rs[0]["trainable_params"]
        seen_tps = C.median([r["seen_tokens_per_s"] for r in rs])
        flops_6n, flops_lora = 6 * n_total * seen_tps, (4 * n_total + 2 * n_train) * seen_tps
        s = {"reps": len(rs), "micro_batch_budget": rs[0].get("micro_batch_budget"),
             "trained_tokens_per_s": C.median([r["trained_tokens_per_s"] for r in rs]),
             "seen_tokens_per_s": seen_tps, "wall_s": C.median([r["wall_s"] for r in rs]),
             "all_trained_tokens_per_s": [r["trained_tokens_per_s"] for r in rs],
             "final_loss": rs[0]["final_loss"], "losses": rs[0]["losses"],
             "padding_fraction": 1 - rs[0]["seen_tokens"] / rs[0]["computed_tokens"],
             "model_tflops_6N": flops_6n / 1e12, "model_tflops_lora_aware": flops_lora / 1e12,
             "total_params": n_total, "trainable_params": n_train}
        if use_cuda:
            name = torch.cuda.get_device_name(0)
            peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
            s["mfu_6N"] = flops_6n / peak if peak else None
            s["mfu_lora_aware"] = flops_lora / peak if peak else None
            s["peak_flops"] = peak
        else:
            ref = C.median([peak_before, peak_after])
            s["fraction_of_measured_matmul_6N"] = flops_6n / 1e9 / ref
            s["fraction_of_measured_matmul_lora_aware"] = flops_lora / 1e9 / ref
        summary[arm] = s

    core_l, tr_l = summary["core"]["losses"], summary["trainer"]["losses"]
    diffs = [abs(a - b) for a, b in zip(core_l, tr_l)]
    ratio = summary["core"]["trained_tokens_per_s"] / summary["trainer"]["trained_tokens_per_s"]
    loss_match = {"steps_core": len(core_l), "steps_trainer": len(tr_l), "max_abs_step_diff": max(diffs),
                  "final_core": core_l[-1], "final_trainer": tr_l[-1],
                  "final_rel_diff": abs(core_l[-1] - tr_l[-1]) / abs(tr_l[-1]),
                  "note": "the Trainer logs losses rounded to 4 decimals; LoRA dropout masks come from different "
                          "RNG streams in the two arms, so steps after the first differ by dropout noise"}
    doc = {
        "benchmark": "training",
        "what": "trained tokens/s of the training core (padding-free, response-only LM head) vs transformers.Trainer "
                "with padded batches, same data/order/LoRA/optimiser/schedule; loss curves of both",
        "setup": {"model": args.model, "task": args.task, "targets": "gold responses", "n_examples": len(records),
                  "subset_seed": args.seed, "data": data_stats, "train_config": cfg.to_dict(),
                  "core_micro_batch_budget": budget, "ablation_arm": ablation_arm if not use_cuda else None,
                  "device": "cuda" if use_cuda else "cpu",
                  "reps": args.reps, "ablation_reps": args.ablation_reps if not use_cuda else 0,
                  "interleaving": "core,trainer / trainer,core / ...; the ablation arm after each of the first "
                                  "ablation_reps pairs",
                  "n_counting": "N = all model parameters (frozen base incl. the tied embedding, plus LoRA); "
                                "6N per real token is the full-fine-tuning convention; lora_aware = 4N + 2*N_trainable "
                                "(forward 2N, activation gradients 2N, weight gradients only for LoRA); attention "
                                "FLOPs not counted; padding tokens not counted as useful"},
        "environment": env,
        "cpu_matmul_gflops": {"before": peak_before, "after": peak_after} if not use_cuda else None,
        "arms": summary,
        "ratio_core_over_trainer": ratio,
        "ratio_core_over_ablation": (summary["core"]["trained_tokens_per_s"]
                                     / summary[ablation_arm]["trained_tokens_per_s"] if ablation_arm in summary else None),
        "ratio_ablation_over_trainer": (summary[ablation_arm]["trained_tokens_per_s"]
                                        / summary["trainer"]["trained_tokens_per_s"] if ablation_arm in summary else None),
        "loss_match": loss_match,
        "target": {"ratio_at_least": 1.3, "met": ratio >= 1.3},
        "runs": runs, "load_start": load_start, "load_end": C.load(),
    }
    path = C.write_result("training", doc, args.out)

    rows = [(arm, s["micro_batch_budget"] or "-", s["reps"], s["trained_tokens_per_s"], s["seen_tokens_per_s"],
             s["wall_s"], s["final_loss"],
             s["padding_fraction"]) for arm, s in summary.items()]
    print(C.table(rows, ["arm", "budget", "reps", "trained tok/s", "seen tok/s", "wall s", "final loss", "padding"]))
    print(f"\ncore / trainer: {ratio:.2f}x (target >= 1.3x: {'met' if ratio >= 1.3 else 'MISSED'}); "
          f"max |step loss diff| {loss_match['max_abs_step_diff']:.4f}, final {core_l[-1]:.4f} vs {tr_l[-1]:.4f}")
    if doc["ratio_core_over_ablation"]:
        print(f"packing budget {budget} vs {args.ablation_budget}: core / {ablation_arm} "
              f"{doc['ratio_core_over_ablation']:.2f}x; {ablation_arm} / trainer {doc['ratio_ablation_over_trainer']:.2f}x")
    print("loss curve core   :", " ".join(f"{x:.3f}" for x in core_l))
    print("loss curve trainer:", " ".join(f"{x:.3f}" for x in tr_l))
    print(f"load average at start {load_start}, at end {doc['load_end']}; wrote {path}")
    return 0


def precision_main(args: argparse.Namespace) -> int:
    """Throughput and loss agreement of the training core under each precision (module docstring)."""
    import torch  # noqa: PLC0415

    import methods.train as core  # noqa: PLC0415
    from evals.tasks import get_task  # noqa: PLC0415

    arms = [a.strip() for a in args.precisions.split(",") if a.strip()]
    if len(arms) < 2:
        raise SystemExit("--precisions needs at least two arms (the first is the reference)")
    load_start = C.load()
    env = C.environment(args.model)
    task = get_task(args.task)
    n = args.steps * args.batch_size
    examples = task.load("train", Path(args.data_dir), limit=n, seed=args.seed)
    records = [{"id": ex["id"], "prompt": task.train_messages(ex), "target": task.gold_response(ex)}
               for ex in examples]
    budget = args.max_tokens_per_micro_batch or (4096 if torch.cuda.is_available() else 512)
    base = dict(finetune="lora", lora_r=8, lora_alpha=16, lora_dropout=args.lora_dropout,
                lora_target_modules=["q_proj", "v_proj"], learning_rate=args.lr, epochs=1,
                batch_size=args.batch_size, max_length=args.max_length, max_tokens_per_micro_batch=budget,
                lr_scheduler="cosine", warmup_ratio=0.03, weight_decay=0.0, max_grad_norm=1.0, seed=0,
                checkpoint_minutes=0)
    cfgs = {a: core.TrainConfig(**base, precision=a) for a in arms}
    work = Path(tempfile.mkdtemp(prefix="bench-precision-"))

    def run(arm: str, tag: str, recs=records, cfg=None) -> dict:
        with C.Timer() as t:
            log = core.train(args.model, recs, cfg or cfgs[arm], work / tag, progress=False)
        return {"wall_s": log["wall_time_s"], "trained_tokens": log["trained_tokens"], "seen_tokens": log["seen_tokens"],
                "trained_tokens_per_s": log["trained_tokens_per_s"], "seen_tokens_per_s": log["seen_tokens_per_s"],
                "losses": [s["loss"] for s in log["steps"]], "precision": log["precision"],
                "mixed_precision": log["mixed_precision"], "base_weights_dtype": log["base_weights_dtype"],
                "process": t.record()}

    for arm in [] if args.no_warmup else arms:   # untimed: first-use costs of each arm's kernels (bf16 included)
        warm = core.TrainConfig(**{**cfgs[arm].to_dict(), "batch_size": min(2, len(records))})
        run(arm, f"warmup-{arm}", recs=records[:warm.batch_size], cfg=warm)
    runs: list[dict] = []
    for rep in range(args.reps):
        order = arms[rep % len(arms):] + arms[:rep % len(arms)]       # rotated: no arm always runs first
        for arm in order:
            r = run(arm, f"{arm}-{rep}")
            runs.append({"arm": arm, "rep": rep, **r})
            print(f"rep {rep} {arm:14s}: {r['trained_tokens_per_s']:.1f} trained tok/s, {r['seen_tokens_per_s']:.1f} "
                  f"seen tok/s, wall {r['wall_s']:.1f} s, final loss {r['losses'][-1]:.4f} "
                  f"(load {r['process']['load_before'][0]} -> {r['process']['load_after'][0]})",
                  file=sys.stderr, flush=True)

    ref = arms[0]
    ref_losses = next(r["losses"] for r in runs if r["arm"] == ref)
    summary: dict[str, dict] = {}
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm]
        losses = rs[0]["losses"]
        rel = [abs(a - b) / abs(b) for a, b in zip(losses, ref_losses)]
        summary[arm] = {
            "reps": len(rs), "precision": rs[0]["precision"], "mixed_precision": rs[0]["mixed_precision"],
            "base_weights_dtype": rs[0]["base_weights_dtype"],
            "trained_tokens_per_s": C.median([r["trained_tokens_per_s"] for r in rs]),
            "seen_tokens_per_s": C.median([r["seen_tokens_per_s"] for r in rs]),
            "all_trained_tokens_per_s": [r["trained_tokens_per_s"] for r in rs],
            "wall_s": C.median([r["wall_s"] for r in rs]), "losses": losses,
            "losses_identical_across_reps": all(r["losses"] == losses for r in rs),
            "loss_rel_diff_vs_reference": rel, "max_loss_rel_diff": max(rel),
            "final_loss_rel_diff": rel[-1],
        }
    ref_tps = summary[ref]["trained_tokens_per_s"]
    drift = abs(ref_losses[0] - ref_losses[-1]) / abs(ref_losses[0])
    for arm, s in summary.items():
        s["speedup_vs_reference"] = s["trained_tokens_per_s"] / ref_tps
        s["agrees"] = s["max_loss_rel_diff"] <= args.loss_rtol
        s["faster_and_agrees"] = arm != ref and s["speedup_vs_reference"] > 1 and s["agrees"]
    doc = {
        "benchmark": "training_precision",
        "what": "trained tokens/s of the training core per TrainConfig.precision, and the per-step loss agreement "
                "of each arm with the first (reference) arm over the same real training steps",
        "setup": {"model": args.model, "task": args.task, "targets": "gold responses", "n_examples": len(records),
                  "steps": args.steps, "subset_seed": args.seed, "train_config": {**base, "precision": "per arm"},
                  "arms": arms, "reference": ref, "reps": args.reps,
                  "interleaving": "arms rotated each repetition; " + ("no warm-up" if args.no_warmup else
                                                                       "one untimed warm-up step per arm first"),
                  "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "tolerance": {"loss_rtol": args.loss_rtol,
                      "why": "largest per-step relative loss difference from the reference arm counted as agreement: "
                             "~5x bf16's unit roundoff (2^-8 = 0.0039); a step's loss averages hundreds of token "
                             "log-probs, but weights trained in different precisions drift apart step by step"},
        "reference_loss_drift": drift,
        "environment": env, "arms": summary, "runs": runs, "load_start": load_start, "load_end": C.load(),
    }
    name = "training_precision_" + Path(args.model).name.replace(".", "_")
    path = C.write_result(name, doc, args.out)
    rows = [(arm, s["reps"], s["trained_tokens_per_s"], s["seen_tokens_per_s"], s["speedup_vs_reference"],
             s["max_loss_rel_diff"], s["losses"][-1], "yes" if s["agrees"] else "NO") for arm, s in summary.items()]
    print(C.table(rows, ["arm", "reps", "trained tok/s", "seen tok/s", "x ref", "max rel loss diff", "final loss",
                         f"agrees (<= {args.loss_rtol})"]))
    for arm, s in summary.items():
        print(f"loss curve {arm:14s}:", " ".join(f"{x:.4f}" for x in s["losses"]))
    print(f"reference loss moved {drift:.1%} over {args.steps} steps; load average at start {load_start}, at end "
          f"{doc['load_end']}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
