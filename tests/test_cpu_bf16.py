"""Whether bf16 is native on this CPU (repro.runtime.provenance.cpu_info), recorded in every result's hardware, and
the warning `repro run` gives when a bf16 preset meets a CPU that would emulate it (a Zen 3 EPYC ran the qwen-code
study's bf16 generation several times slower than the AVX512-BF16 machines it was sized on)."""
from __future__ import annotations

import pytest

from repro.cli.run import bf16_warning
from repro.driver.cell import CellRunner
from repro.driver.grid import plan
from repro.driver.recipes import load_recipe
from repro.runtime import provenance

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse2 avx avx2 fma bmi2 sha_ni
processor\t: 1
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu vme sse2 avx avx2 fma bmi2 sha_ni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8481C
flags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd aes sve bf16 i8mm
CPU implementer\t: 0x41
"""


def test_cpu_info_reads_the_first_cores_values_and_whether_bf16_is_native():
    assert provenance.cpu_info(ZEN3) == {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model": "1",
                                         "cpu_flags": ["avx2"], "cpu_bf16": "emulated"}
    spr = provenance.cpu_info(SAPPHIRE_RAPIDS)
    assert spr["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16", "amx_bf16"] and spr["cpu_bf16"] == "native"
    assert provenance.cpu_info(GRAVITON3)["cpu_bf16"] == "native"
    assert set(provenance.cpu_info()) <= set(provenance.hardware())                 # recorded with every result


def _runner(tmp_path, preset: str, *overrides: str):
    recipe = load_recipe(preset, list(overrides))
    runner = CellRunner(recipe, data_dir=None, work_root=tmp_path / "runs", results_root=tmp_path / "results",
                        progress=False)
    return runner, plan(recipe, None, None, None)


@pytest.mark.parametrize("cpuinfo, warned", [(ZEN3, True), (SAPPHIRE_RAPIDS, False)])
def test_run_warns_when_a_bf16_preset_meets_a_cpu_without_bf16(tmp_path, monkeypatch, cpuinfo, warned):
    real = provenance.cpu_info
    monkeypatch.setattr(provenance, "cpu_info", lambda text=None: real(cpuinfo))
    monkeypatch.setattr("repro.runtime.models.default_device", lambda: "cpu")
    runner, cells = _runner(tmp_path, "qwen-code")
    text = bf16_warning(runner, cells)
    if not warned:
        assert text is None
        return
    assert text.startswith("warning: preset qwen-code ") and "family 25 model 1" in text, text
    assert "trains under bf16-autocast (train.precision)" in text
    vllm = runner.backend == "vllm"                     # its generation dtype is a vLLM engine setting
    assert ("generates in bf16" in text) == vllm
    base_only = bf16_warning(runner, [c for c in cells if c.method == "base"])
    assert (base_only is not None and "trains" not in base_only) if vllm else base_only is None
    smoke, smoke_cells = _runner(tmp_path, "smoke")     # fp32 throughout: nothing to warn about
    assert bf16_warning(smoke, smoke_cells) is None
