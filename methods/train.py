"""The one training core. Every method is trained here, from its targets.jsonl, with the same seed, data order,
optimiser, schedule and hyper-parameters, so any difference between methods comes from the targets alone.

- Response-only loss: labels come from the prompt/response token boundary of the chat-templated example
  (repro.runtime.chat.encode_pair), and every example must train at least one token.
- Loss = summed token cross-entropy of an optimiser step / number of trained tokens in that step, so how examples
  are packed into micro-batches (or spread over GPUs) does not change the loss or the gradient.
- Padding-free packing: a micro-batch is one row of concatenated examples whose position ids restart at each
  example; transformers turns that into a block-diagonal causal mask, so examples never attend to each other.
  Only positions that predict a trained token go through the LM head (``logits_to_keep``).
- LoRA (PEFT) or full fine-tuning; gradient accumulation over micro-batches. Precision (`TrainConfig.precision`):
  "auto" = bf16 on GPU (LoRA: frozen base weights in bf16 too), fp32 on CPU; "fp32", "bf16-autocast" (fp32
  weights, bf16 matmuls) or "bf16" (LoRA: frozen base weights in bf16, trained weights fp32, under autocast).
  The train log records what ran (`precision`, `mixed_precision`, `base_weights_dtype`).
- Resumable: a single process writes a checkpoint (trained weights, optimiser, scheduler, RNG states, the position
  in the step schedule and the log so far) at most `checkpoint_minutes` apart, atomically, to
  out_dir/checkpoint.pt; a run started again on the same data and options resumes from it and produces the same
  adapter and loss log as a run never stopped (tests/test_resume.py). Deleted once the adapter is written.
- Step progress: `on_step(record)` after every optimiser step, and a log line (run.log under the driver) at
  most every 30 s.
- Runs unchanged under ``accelerate launch`` (configs in repro/accelerate/): each process takes every world-th
  example of a step, and all processes run the same number of micro-batches so DDP/FSDP/ZeRO stay in lockstep.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from accelerate import Accelerator
from accelerate.utils import DistributedType
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, get_scheduler, set_seed

from methods.train_config import TrainConfig
from repro.runtime import models
from repro.runtime.chat import EncodedPair, encode_pair
from repro.runtime.packing import greedy_groups, packed_batch, packed_logits
from repro.runtime.store import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_VERSION = 1
PROGRESS_LOG_EVERY_S = 30.0


def encode_records(tokenizer, records: list[dict], max_length: int) -> tuple[list[EncodedPair], dict]:
    """Tokenize (prompt, target) records; truncate responses beyond max_length; every example keeps >= 1 token."""
    pairs, truncated = [], 0
    for r in records:
        pair = encode_pair(tokenizer, r["prompt"], r["target"])
        if len(pair.input_ids) > max_length:
            if pair.prompt_len >= max_length:
                raise ValueError(f"example {r.get('id')}: prompt alone has {pair.prompt_len} tokens >= max_length "
                                 f"{max_length}; raise max_length")
            pair = EncodedPair(pair.input_ids[:max_length], pair.prompt_len)
            truncated += 1
        # The boundary must leave something to learn; a fully masked example silently trains nothing.
        assert pair.n_response >= 1, f"example {r.get('id')} trains no token"
        pairs.append(pair)
    return pairs, {"examples": len(pairs), "truncated": truncated,
                   "trained_tokens_per_epoch": sum(p.n_response for p in pairs),
                   "total_tokens_per_epoch": sum(len(p.input_ids) for p in pairs)}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch: a function of (n, seed, epoch) only, identical for every method."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def step_schedule(pairs: list[EncodedPair], cfg: TrainConfig, token_budget: int | None = None) -> list[list[int]]:
    """The examples of every optimiser step, in order: `cfg.epochs` epochs of `epoch_order`, or, with a
    `token_budget`, as many steps of the same epoch orders (epochs continuing past `cfg.epochs` when needed) as it
    takes for the trained tokens to reach the budget. A budget is how one method is trained for another's number
    of trained tokens (methods.registry: `Method.trained_tokens_of`) with everything else unchanged."""
    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    steps, tokens, epoch = [], 0, 0
    while epoch < cfg.epochs if token_budget is None else tokens < token_budget:
        order = epoch_order(len(pairs), cfg.seed, epoch)
        for k in range(steps_per_epoch):
            if token_budget is not None and tokens >= token_budget:
                break
            idx = order[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            steps.append(idx)
            tokens += sum(pairs[i].n_response for i in idx)
        epoch += 1
    return steps


def micro_batches(indices: list[int], pairs: list[EncodedPair], budget: int, packing: bool) -> list[list[int]]:
    """Group examples (kept in order) into micro-batches of at most `budget` tokens (an over-long example alone);
    padded micro-batches count their padding against the budget."""
    if packing:
        return greedy_groups(indices, [len(p.input_ids) for p in pairs], budget)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in indices:
        width = max([len(pairs[i].input_ids)] + [len(pairs[j].input_ids) for j in current])
        if current and width * (len(current) + 1) > budget:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def _padded_batch(group: list[int], pairs: list[EncodedPair], pad_id: int, device) -> dict:
    width = max(len(pairs[i].input_ids) for i in group)
    ids = torch.full((len(group), width), pad_id, dtype=torch.long)
    labels = torch.full((len(group), width), -100, dtype=torch.long)
    mask = torch.zeros((len(group), width), dtype=torch.long)
    for row, i in enumerate(group):
        n = len(pairs[i].input_ids)
        ids[row, :n] = torch.tensor(pairs[i].input_ids)
        labels[row, :n] = torch.tensor(pairs[i].labels())
        mask[row, :n] = 1
    return {"inputs": {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, "labels": labels.to(device)}


def _loss_sum(model, group: list[int], pairs: list[EncodedPair], packing: bool, pad_id: int, device):
    """Summed cross-entropy over the trained tokens of a micro-batch."""
    if packing:
        batch = packed_batch([pairs[i] for i in group], device)
        logits, targets = packed_logits(model, batch), batch["targets"]
    else:
        batch = _padded_batch(group, pairs, pad_id, device)
        next_labels = batch["labels"][:, 1:]
        sel = next_labels != -100
        logits = model(**batch["inputs"], use_cache=False).logits[:, :-1][sel]
        targets = next_labels[sel]
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def _cpu_autocast(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _numel(p) -> int:
    return getattr(p, "ds_numel", None) or p.numel()


def _configure_deepspeed(accelerator, cfg: TrainConfig) -> None:
    """Explicit DeepSpeed batch and clipping settings (no-op without DeepSpeed).

    We feed the engine our own packed micro-batches, not a DataLoader, so accelerate cannot fill an ``auto``
    micro-batch size and rejects the config; and the engine's own accumulation counter must stay at 1 because the
    step boundary is set per micro-batch (see the training loop). Micro-batch size 1 = one packed row (what
    DeepSpeed uses it for is throughput accounting only). Clipping is the engine's, so it takes cfg.max_grad_norm."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds = accelerator.state.deepspeed_plugin.deepspeed_config
    if ds.get("gradient_accumulation_steps", 1) not in (1, "auto"):
        raise ValueError(f"DeepSpeed gradient_accumulation_steps={ds['gradient_accumulation_steps']}: the training "
                         "core accumulates over its own token-budget micro-batches; set it to 1")
    ds.update({"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
               "train_batch_size": accelerator.num_processes, "gradient_clipping": cfg.max_grad_norm or 0.0})


def run_fingerprint(model_name: str, cfg: TrainConfig, precision: str, pairs: list[EncodedPair],
                    schedule: list[list[int]]) -> str:
    """What a checkpoint may resume: the model, every option that decides what is trained (and the precision
    "auto" resolved to here), the tokenized examples and the step schedule. A checkpoint of another run is never
    resumed (it is replaced)."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_name, "config": cfg.hashed(), "precision": precision, "schedule": schedule},
                        sort_keys=True).encode())
    for p in pairs:
        h.update(json.dumps([p.input_ids, p.prompt_len]).encode())
    return h.hexdigest()


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically: the file is the previous checkpoint or this one, whenever the process is killed."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at `path` if it belongs to this run (same fingerprint), else None."""
    if not path.is_file():
        return None
    try:
        # our own file, written by save_checkpoint: RNG states are numpy/python objects, not only tensors
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - an unreadable checkpoint is redone, never trusted
        log.warning("%s: unreadable training checkpoint (%s): starting from step 0", path, e)
        return None
    if state.get("version") != CHECKPOINT_VERSION or state.get("fingerprint") != fingerprint:
        log.warning("%s: a checkpoint of another run (other data or options): starting from step 0", path)
        return None
    return state


def train(model_name: str, records: list[dict], cfg: TrainConfig, out_dir: str | Path, *,
          progress: bool = True, extra: dict | None = None, budget_records: list[dict] | None = None,
          on_step: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune `model_name` on `records` ({prompt: messages, target: str}); saves the adapter (or full model)
    under out_dir/adapter and the training log under out_dir/train_log.json. Returns the log.

    `budget_records`: train for as many trained tokens as `cfg.epochs` epochs of these records hold (tokenized
    here, with the same tokenizer and truncation), instead of for `cfg.epochs` epochs of `records`.

    `on_step`: called after every optimiser step with that step's log record plus ``total_steps``.
    A checkpoint of this same run in out_dir (module docstring) is resumed from."""

    out_dir = Path(out_dir)
    if not records:
        raise ValueError("no training records")
    use_cuda = torch.cuda.is_available()
    # step_scheduler_with_optimizer=False: accelerate otherwise advances a prepared scheduler once per process at
    # every step (it assumes each process's DataLoader shard has 1/world of the steps); our steps are already global,
    # so under 2 processes the cosine schedule ran twice as fast and wrapped around past its end.
    precision = cfg.resolved_precision(use_cuda)
    # On CPU, bf16 autocast is done here (`cpu_autocast`), not by accelerate: its mixed-precision setting is
    # process-wide state that refuses to change within a process (benchmarks/training.py runs every precision in one).
    cpu_bf16 = not use_cuda and precision != "fp32"
    accelerator = Accelerator(mixed_precision="bf16" if use_cuda and precision != "fp32" else "no", cpu=not use_cuda,
                              step_scheduler_with_optimizer=False)
    world, rank = accelerator.num_processes, accelerator.process_index
    set_seed(cfg.seed)

    tok = models.load_tokenizer(model_name)
    pairs, data_stats = encode_records(tok, records, cfg.max_length)
    token_budget = None
    if budget_records is not None:
        _, budget_stats = encode_records(tok, budget_records, cfg.max_length)
        token_budget = budget_stats["trained_tokens_per_epoch"] * cfg.epochs
        data_stats["token_budget"] = {"trained_tokens": token_budget, "of_examples": budget_stats["examples"],
                                      "epochs": cfg.epochs}
    schedule = step_schedule(pairs, cfg, token_budget)
    # Frozen base weights may live in bf16 ("bf16": LoRA only); weights that train stay fp32 (peft keeps adapters
    # in fp32) and autocast computes in bf16.
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(models.local_path(model_name), dtype=dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    if cfg.finetune == "lora":
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=list(cfg.lora_target_modules), task_type="CAUSAL_LM")
        torch.manual_seed(cfg.seed)         # LoRA's A matrices are random: same seed, same start, every method
        with warnings.catch_warnings():     # peft 0.21 reads a property transformers 5 deprecates; harmless
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, lora)
    elif cfg.finetune != "full":
        raise ValueError(f"finetune must be 'lora' or 'full', not {cfg.finetune!r}")
    # ZeRO-3 partitions parameters at load (ds_numel is the full size); count before prepare re-wraps them.
    n_trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    n_total = sum(_numel(p) for p in model.parameters())

    steps_per_epoch = math.ceil(len(pairs) / cfg.batch_size)
    total_steps = len(schedule)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    # Checkpoints: a single process (a sharded model's or optimiser's state would need every rank's part).
    fingerprint = run_fingerprint(model_name, cfg, precision, pairs, schedule)
    ckpt_path = out_dir / CHECKPOINT
    checkpointing = cfg.checkpoint_minutes > 0 and world == 1
    resumed = load_checkpoint(ckpt_path, fingerprint) if checkpointing else None
    if resumed is not None:             # loaded into the raw model and optimiser, before prepare wraps them
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in resumed["trainable"].items():
                named[name].copy_(value)
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        log.info("resuming training from %s: step %d of %d", ckpt_path, resumed["next_step"], total_steps)
    _configure_deepspeed(accelerator, cfg)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    # FSDP2 replaces every parameter by a sharded DTensor (and points the optimiser at the new ones): parameters
    # collected before prepare are orphans whose .grad stays None, so clipping them measured 0 and clipped nothing.
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0

    steps_log: list[dict] = []
    trained_tokens = seen_tokens = 0
    first_step, elapsed_before, resumes = 0, 0.0, []
    if resumed is not None:
        steps_log = resumed["steps_log"]
        trained_tokens, seen_tokens = resumed["trained_tokens"], resumed["seen_tokens"]
        first_step, elapsed_before = resumed["next_step"], resumed["elapsed_s"]
        resumes = resumed["resumes"] + [{"at_step": first_step, "elapsed_s": elapsed_before}]
        _set_rng_state(resumed["rng"])   # last: dropout masks continue exactly where the checkpoint left them
    del resumed
    t_start = time.perf_counter() - elapsed_before
    last_ckpt = last_log = time.perf_counter()
    bar = tqdm(total=total_steps, initial=first_step, desc="train", unit="step",
               disable=not progress or not accelerator.is_main_process)
    for step_no, step_idx in enumerate(schedule):
        if step_no < first_step:
            continue
        epoch = step_no // steps_per_epoch
        step_tokens = sum(pairs[i].n_response for i in step_idx)
        # Every process knows every process's share, so all agree on the micro-batch count without talking.
        plans = [micro_batches(step_idx[r::world], pairs, cfg.max_tokens_per_micro_batch, cfg.packing)
                 for r in range(world)]
        n_micro = max(len(p) for p in plans)
        mine = plans[rank] + [[]] * (n_micro - len(plans[rank]))
        loss_total = torch.zeros((), device=accelerator.device)
        for m, group in enumerate(mine):
            # A process with fewer micro-batches runs a zero-weight one so gradient syncs still line up.
            dummy = not group
            sync = m == n_micro - 1
            # The step's last micro-batch is its accumulation boundary. accelerate reads this flag: under
            # DeepSpeed its backward() steps the engine (clip, optimiser, scheduler, zero_grad) only at the
            # boundary, so ZeRO takes one optimiser step per step, not one per micro-batch; the optimiser
            # wrapper steps only when it is set. (The micro-batch count varies from step to step with packing,
            # so accelerate's fixed gradient_accumulation_steps counter cannot mark it.)
            accelerator.sync_gradients = sync
            ctx = accelerator.no_sync(model) if not sync and world > 1 else contextlib.nullcontext()
            with ctx, accelerator.autocast(), _cpu_autocast(cpu_bf16):
                loss_sum = _loss_sum(model, group or [step_idx[0]], pairs, cfg.packing, pad_id,
                                     accelerator.device)
                # DDP averages gradients over processes; scaling by world size makes the result the mean over
                # all trained tokens of the step.
                loss = loss_sum * (0.0 if dummy else world / step_tokens)
                accelerator.backward(loss)
            if not dummy:
                loss_total += loss_sum.detach()
        grad_norm = accelerator.clip_grad_norm_(trainable, cfg.max_grad_norm) if cfg.max_grad_norm else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step_loss = accelerator.reduce(loss_total, reduction="sum").item() / step_tokens
        trained_tokens += step_tokens
        seen_tokens += sum(len(pairs[i].input_ids) for i in step_idx)
        elapsed = time.perf_counter() - t_start
        steps_log.append({"step": len(steps_log) + 1, "epoch": epoch, "loss": step_loss,
                          "lr": scheduler.get_last_lr()[0], "trained_tokens": step_tokens,
                          "grad_norm": float(grad_norm) if grad_norm is not None else None,
                          "elapsed_s": round(elapsed, 3)})
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{trained_tokens / elapsed:.0f}")
        now = time.perf_counter()
        if accelerator.is_main_process and (now - last_log >= PROGRESS_LOG_EVERY_S or step_no + 1 == total_steps):
            log.info("train step %d/%d: loss %.4f, %.1f trained tok/s, %.0f s", step_no + 1, total_steps, step_loss,
                     trained_tokens / elapsed, elapsed)
            last_log = now
        if on_step is not None:
            on_step({**steps_log[-1], "total_steps": total_steps})
        if checkpointing and step_no + 1 < total_steps and now - last_ckpt >= 60 * cfg.checkpoint_minutes:
            unwrapped = accelerator.unwrap_model(model)
            save_checkpoint(ckpt_path, {
                "version": CHECKPOINT_VERSION, "fingerprint": fingerprint, "next_step": step_no + 1,
                "trainable": {n: p.detach().clone() for n, p in unwrapped.named_parameters() if p.requires_grad},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                "steps_log": steps_log, "trained_tokens": trained_tokens, "seen_tokens": seen_tokens,
                "elapsed_s": time.perf_counter() - t_start, "resumes": resumes})
            last_ckpt = time.perf_counter()
    bar.close()
    wall = time.perf_counter() - t_start
    accelerator.wait_for_everyone()

    adapter_dir = out_dir / "adapter"
    # Sharded models (FSDP2, ZeRO-3) hold a slice of each tensor per process: gathering the full state dict is a
    # collective every process must join; only then does rank 0 write it (saving rank 0's own shards wrote
    # "invalid python storage").
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(adapter_dir, state_dict=state_dict, safe_serialization=True)
        if cfg.finetune == "full":
            tok.save_pretrained(adapter_dir)
    train_log = {
        "model": model_name, "config": cfg.to_dict(), "data": data_stats, "steps": steps_log,
        "final_loss": steps_log[-1]["loss"], "total_steps": total_steps, "wall_time_s": round(wall, 3),
        "trained_tokens": trained_tokens, "seen_tokens": seen_tokens,
        "trained_tokens_per_s": trained_tokens / wall, "seen_tokens_per_s": seen_tokens / wall,
        "trainable_params": n_trainable, "total_params": n_total, "world_size": world,
        "device": str(accelerator.device), "mixed_precision": "bf16" if cpu_bf16 else accelerator.mixed_precision,
        "precision": precision,
        "base_weights_dtype": str(dtype).removeprefix("torch."),
        "checkpoints": {"every_minutes": cfg.checkpoint_minutes if checkpointing else None, "resumes": resumes},
        "artefact": "adapter" if cfg.finetune == "lora" else "full", **(extra or {}),
    }
    if accelerator.is_main_process:
        atomic_write_json(out_dir / "train_log.json", train_log)
        ckpt_path.unlink(missing_ok=True)       # the adapter and the log are written: nothing left to resume
    # No process leaves before rank 0 has written: a process that exits while another still works tears down its
    # end of the process group under it (seen once under ZeRO-3 on CPU: "terminate called without an active
    # exception" on rank 1 while rank 0 saved).
    accelerator.wait_for_everyone()
    return train_log


def end_process_group() -> None:
    """Leave the torch.distributed process group together and destroy it (a no-op in a single process). Called by
    entry points that run one training under torchrun / accelerate launch, once, just before the process exits."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
