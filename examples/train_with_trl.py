"""Train on exported S3FT targets with TRL instead of the suite's own core (pip install -e ".[trl]").

    python -m repro build --task examples/tasks/arc_easy.yaml --method s3ft --model M --export prompt_completion ...
    python examples/train_with_trl.py EXPORT.jsonl MODEL_FOLDER_OR_HUB_ID OUT_DIR [--max-steps N]

A `prompt_completion` export trains on the answer only (TRL's default for that format, as the suite's core does);
a `messages` export trains on the whole conversation unless the chat template marks assistant turns.
"""
import argparse

from datasets import load_dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

ap = argparse.ArgumentParser()
ap.add_argument("data")
ap.add_argument("model")
ap.add_argument("out")
ap.add_argument("--max-steps", type=int, default=-1)
args = ap.parse_args()

dataset = load_dataset("json", data_files=args.data, split="train").remove_columns("metadata")
trainer = SFTTrainer(
    model=args.model,
    train_dataset=dataset,
    args=SFTConfig(output_dir=args.out, per_device_train_batch_size=4, num_train_epochs=1, max_steps=args.max_steps,
                   learning_rate=1e-4, lr_scheduler_type="cosine", logging_steps=1,
                   report_to=[], use_cpu=True),
    peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                           task_type="CAUSAL_LM"),
)
trainer.train()
trainer.save_model(args.out)
print(f"adapter saved in {args.out}")
