"""LoRA adapters with random weights, for tests that need an adapter which visibly changes a model's outputs."""
from __future__ import annotations

from pathlib import Path


def random_adapter(base_dir: Path, out: Path, seed: int, scale: float) -> Path:
    """A LoRA adapter (r=8 on q/v, the presets' shape) on the fp32 model in `base_dir`, its B matrices drawn from
    N(0, scale^2) (peft starts them at zero, which would change nothing); saved to `out`."""
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    model.save_pretrained(out)
    return out
