"""What a training run is told: every knob of the training core (`TrainConfig`) and the records it trains on.

Kept apart from methods/train.py so that recipes, hashes and the command line can read and check a training
configuration without importing torch; the core imports its heavy libraries at module level.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from repro.runtime.store import read_jsonl

PRECISIONS = ("auto", "fp32", "bf16-autocast", "bf16")


@dataclass
class TrainConfig:
    """Every knob of a training run. Recipes set these; methods never do."""

    finetune: str = "lora"                      # "lora" | "full"
    lora_r: int = 8                             # paper: r=8, alpha=16, dropout 0.1 (targets not reported)
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-4
    epochs: int = 2
    batch_size: int = 8                         # examples per optimiser step, over all processes
    max_tokens_per_micro_batch: int = 4096      # packing budget of one forward pass, per process
    max_length: int = 1024                      # longer examples lose the end of their response
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    packing: bool = True                        # False: padded micro-batches (same loss, slower)
    gradient_checkpointing: bool = False
    # "auto": fp32 on CPU, bf16 on GPU (what every result before this option used; `resolved_precision`); "fp32";
    # "bf16-autocast" (fp32 weights, matmuls in bf16); "bf16" (frozen base weights stored in bf16 too, trained
    # weights fp32, LoRA only). Changes the numbers, so it is hashed - but only when set away from "auto".
    precision: str = "auto"
    # A resumable checkpoint (methods/train.py) at most this many minutes apart; 0 = none. Decides only how much
    # work a kill loses, never a number: kept out of every hash.
    checkpoint_minutes: float = 5.0

    #: Options that cannot change what is trained: left out of the stage hash.
    NOT_HASHED: ClassVar[frozenset[str]] = frozenset({"checkpoint_minutes"})
    #: Options added after results were committed: hashed only when set away from these defaults, so the hashes
    #: (and the committed cells) of recipes that do not set them stay what they were.
    HASHED_WHEN_SET: ClassVar[dict[str, Any]] = {"precision": "auto"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        types = {f.name: f.type for f in fields(cls)}
        unknown = set(d) - set(types)
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; known: {sorted(types)}")
        return cls(**{k: _coerce(k, v, types[k]) for k, v in d.items()})

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"training option precision={self.precision!r}; known: {list(PRECISIONS)}")
        if self.precision == "bf16" and self.finetune != "lora":
            raise ValueError("precision 'bf16' stores the frozen base weights in bf16: LoRA only (finetune: lora)")
        if self.checkpoint_minutes < 0:
            raise ValueError(f"checkpoint_minutes must be >= 0, got {self.checkpoint_minutes}")

    def to_dict(self) -> dict:
        return asdict(self)

    def hashed(self) -> dict:
        """The options that decide what is trained, for a stage hash (NOT_HASHED and HASHED_WHEN_SET above)."""
        return {k: v for k, v in self.to_dict().items()
                if k not in self.NOT_HASHED and not (k in self.HASHED_WHEN_SET and v == self.HASHED_WHEN_SET[k])}

    def resolved_precision(self, use_cuda: bool) -> str:
        """What "auto" means on this device: fp32 on a CPU; on a GPU bf16 autocast, over bf16 frozen base weights
        for LoRA (what the core always did there)."""
        if self.precision != "auto":
            return self.precision
        if not use_cuda:
            return "fp32"
        return "bf16" if self.finetune == "lora" else "bf16-autocast"


def _coerce(name: str, value: Any, type_name: str) -> Any:
    """YAML reads 1e-4 as a string and users write "true"; accept those, reject anything else by name."""
    try:
        if type_name == "float":
            return float(value)
        if type_name == "int":
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if type_name == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise ValueError
            return value
        if type_name.startswith("list"):
            return [value] if isinstance(value, str) else list(value)
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"training option {name}={value!r} is not a valid {type_name}") from None



def load_records(path: str | Path) -> list[dict]:
    records = read_jsonl(path)
    for i, r in enumerate(records, 1):
        for key in ("prompt", "target"):
            if key not in r:
                raise ValueError(f"{path}:{i}: field '{key}' is missing")
    return records
