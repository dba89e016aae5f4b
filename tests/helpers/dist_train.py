"""Run the training core in one process of a torchrun group on CPU, as DDP, FSDP2 or DeepSpeed ZeRO-3.

    python -m torch.distributed.run --nproc_per_node 2 tests/helpers/dist_train.py MODE SPEC.json

MODE: ddp (what accelerate does on CPU by itself: gloo data parallel), fsdp2, zero3 (needs deepspeed). SPEC: {"model", "targets",
"out", "config"}. accelerate turns FSDP and DeepSpeed on only for accelerator back-ends (CUDA, XPU, ...), never for
a CPU process group, so for fsdp2 and zero3 this harness puts accelerate's state into that mode after it is built:
everything after that (accelerator.prepare sharding the model with torch's fully_shard or deepspeed.initialize, the
DTensor-aware clipping, the state-dict gather) is the real code path a GPU run takes. Mixed precision stays off.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def _force_fsdp2() -> None:
    import accelerate  # noqa: PLC0415
    from accelerate.state import PartialState  # noqa: PLC0415
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin  # noqa: PLC0415

    base = accelerate.Accelerator

    class FSDP2OnCPU(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # What repro/accelerate/fsdp.yaml sets, as the plugin accelerate would build from it.
            plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                                    reshard_after_forward=True, state_dict_type="FULL_STATE_DICT",
                                                    cpu_ram_efficient_loading=False)
            self.state.fsdp_plugin = plugin
            self.state.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    accelerate.Accelerator = FSDP2OnCPU


def _force_zero3() -> None:
    import accelerate  # noqa: PLC0415
    from accelerate.state import PartialState  # noqa: PLC0415
    from accelerate.utils import DeepSpeedPlugin, DistributedType  # noqa: PLC0415

    base = accelerate.Accelerator

    class Zero3OnCPU(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # What repro/accelerate/zero3.yaml sets (zero3_init_flag aside: the model is built before this switch).
            plugin = DeepSpeedPlugin(zero_stage=3, gradient_accumulation_steps=1, gradient_clipping=1.0,
                                     offload_optimizer_device="none", offload_param_device="none",
                                     zero3_save_16bit_model=True, zero3_init_flag=False)
            plugin.set_mixed_precision("no")
            plugin.select(_from_accelerator_state=True)
            self.state.deepspeed_plugins = plugin
            self.deepspeed_engine_wrapped = None
            self.state.distributed_type = DistributedType.DEEPSPEED
            PartialState._shared_state["distributed_type"] = DistributedType.DEEPSPEED

    accelerate.Accelerator = Zero3OnCPU


def main() -> None:
    mode, spec_path = sys.argv[1], sys.argv[2]
    spec = json.loads(Path(spec_path).read_text())
    if mode == "fsdp2":
        _force_fsdp2()
    elif mode == "zero3":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed.comm.torch  # noqa: PLC0415

        # DeepSpeed compiles a shared-memory all-reduce for CPU the first time (minutes, needs a C++ toolchain); it
        # is a speed-up only, gloo's all-reduce gives the same sums.
        deepspeed.comm.torch.build_shm_op = lambda: None
        _force_zero3()
    elif mode != "ddp":
        raise SystemExit(f"unknown mode {mode!r}: ddp, fsdp2 or zero3")
    from methods.train import end_process_group, train  # noqa: PLC0415
    from methods.train_config import TrainConfig, load_records  # noqa: PLC0415

    train(spec["model"], load_records(spec["targets"]), TrainConfig(**spec["config"]), spec["out"], progress=False,
          extra={"dist_mode": mode})
    end_process_group()


if __name__ == "__main__":
    main()
