"""Recipe loading and the cross-task setting (true / false / a list of the recipe's tasks)."""
from __future__ import annotations

from pathlib import Path

import pytest

from repro.driver.cell import Cell
from repro.driver.config import resolve
from repro.driver.recipes import available_presets, load_recipe


@pytest.mark.parametrize("preset", available_presets())
def test_every_shipped_preset_loads(preset):
    recipe = load_recipe(preset)
    assert recipe.name == preset
    assert resolve(recipe).name == preset          # and resolves (task and code defaults filled in)


@pytest.mark.parametrize(("setting", "expected"), [
    ("true", ["squad", "gsm8k", "mbpp"]),
    ("false", ["squad"]),
    ("[squad, gsm8k]", ["squad", "gsm8k"]),     # the cell's own task is never repeated
    ("[mbpp]", ["squad", "mbpp"]),
])
def test_eval_tasks_follow_cross_task(setting, expected):
    recipe = load_recipe("smoke", [f"evaluation.cross_task={setting}"])
    cell = Cell("smoke", "squad", "sft", 0)
    assert resolve(recipe).eval_tasks(cell.task) == expected


@pytest.mark.parametrize("setting", ["[nq_open]", "squad", "3"])
def test_cross_task_must_name_the_recipes_tasks(setting):
    with pytest.raises(ValueError, match="cross_task"):
        load_recipe("smoke", [f"evaluation.cross_task={setting}"])


def test_quick_is_the_papers_main_comparison_with_every_knob_commented():
    from repro.driver.recipes import RECIPE_DIR  # noqa: PLC0415

    recipe = load_recipe("quick")
    assert recipe.model == "smollm2-135m-instruct" and list(recipe.tasks) == ["squad"]
    assert recipe.methods == ["base", "sft", "s3ft"]
    assert set(recipe.evaluation["benchmarks"]) == {"mmlu", "truthfulqa_mc2", "hellaswag", "winogrande"}
    text = (RECIPE_DIR / "quick.yaml").read_text()
    bare = [line for line in text.splitlines() if ":" in line and not line.lstrip().startswith("#")
            and "#" not in line and not line.rstrip().endswith(":")          # section headers
            and not line.startswith(("name:", "description:"))]
    assert not bare, f"knobs without a comment saying what they trade: {bare}"


def test_method_seeds_run_a_method_on_its_own_seeds(tmp_path):
    """`method_seeds` (a costly control run once): the plan, the partial-preset bookkeeping and the checks."""
    from repro.driver.grid import plan  # noqa: PLC0415
    from repro.report.load import expected_cells  # noqa: PLC0415

    recipe = load_recipe("smoke", ["seeds=[0, 1]", "methods=[base, sft, s3ft, sft_matched]",
                                   "method_seeds={sft_matched: [0]}", "tasks={squad: {train: 4, test: 4}}"])
    cells = {c.label for c in plan(recipe)}
    assert cells == {"squad/base/seed0", "squad/sft/seed0", "squad/sft/seed1", "squad/s3ft/seed0",
                     "squad/s3ft/seed1", "squad/sft_matched/seed0"}
    assert {c.label for c in plan(recipe, seeds=[1])} == {"squad/base/seed0", "squad/sft/seed1", "squad/s3ft/seed1"}
    assert recipe.to_dict()["method_seeds"] == {"sft_matched": [0]}
    assert "method_seeds" not in load_recipe("smoke").to_dict()       # older recipes' provenance is unchanged

    class Stored:                                                     # a committed cell carrying its recipe
        def __init__(self, method: str, seed: int) -> None:
            self.task, self.method, self.seed = "squad", method, seed
            self.doc = {"provenance": {"recipe": recipe.to_dict()}}
    assert {c.label for c in expected_cells("smoke", [Stored("sft", 0)])} == cells

    for bad, match in (("{sft_matched: 0}", "non-empty list"), ("{ssr: [0]}", "not a trained method"),
                       ("{base: [0]}", "not a trained method")):
        with pytest.raises(ValueError, match=match):
            load_recipe("smoke", ["methods=[base, sft, s3ft, sft_matched]", f"method_seeds={bad}"])


def bare_knobs(preset: str) -> list[str]:
    """Lines of a preset that set a value without a comment saying what it trades (section headers excepted)."""
    from repro.driver.recipes import RECIPE_DIR  # noqa: PLC0415

    text = (RECIPE_DIR / f"{preset}.yaml").read_text()
    return [line for line in text.splitlines() if ":" in line and not line.lstrip().startswith("#")
            and "#" not in line and not line.rstrip().endswith(":") and not line.startswith(("name:", "description:"))]


HEADLINE = {"mmlu", "truthfulqa_mc2", "hellaswag", "winogrande"}


def test_qwen_code_is_the_papers_mbpp_study(data_dir):
    """Issue 27's study preset: the paper's MBPP split (374 train ids 601-974 / 500 test ids 11-510), base + SFT +
    S3FT with two seeds each, the paper's four benchmarks, each sized by the pilot (the line says so)."""
    from repro.driver.cell import CellRunner  # noqa: PLC0415
    from repro.driver.grid import plan  # noqa: PLC0415
    from repro.driver.recipes import RECIPE_DIR  # noqa: PLC0415

    recipe = load_recipe("qwen-code")
    assert recipe.model == "qwen2.5-coder-1.5b-instruct" and list(recipe.tasks) == ["mbpp"]
    assert recipe.methods == ["base", "sft", "s3ft"] and recipe.seeds == [0, 1] and not recipe.method_seeds
    # seed-major: a session that ends after three cells leaves a whole one-seed comparison committed
    assert [c.label for c in plan(recipe)] == ["mbpp/base/seed0", "mbpp/sft/seed0", "mbpp/s3ft/seed0",
                                               "mbpp/sft/seed1", "mbpp/s3ft/seed1"]
    cfg = resolve(recipe)
    assert set(recipe.evaluation["benchmarks"]) == HEADLINE == set(cfg.evaluation.headline_benchmarks)
    assert cfg.train.finetune == "lora" and cfg.train.checkpoint_minutes > 0
    runner = CellRunner(recipe, data_dir=data_dir, work_root=Path("/nonexistent"), results_root=Path("/nonexistent"),
                        progress=False)
    for split, (lo, hi, n) in {"train": (601, 974, 374), "test": (11, 510, 500)}.items():
        ids = sorted(int(ex["id"].split("/")[1]) for ex in runner.examples("mbpp", split))
        assert (ids[0], ids[-1], len(ids)) == (lo, hi, n), split
    assert not bare_knobs("qwen-code"), "every knob says what it trades"
    text = (RECIPE_DIR / "qwen-code.yaml").read_text()
    for name in HEADLINE:       # every benchmark size names the measurement behind it
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{name}:"))
        assert "set by the pilot" in line and "to be set" not in line, line
        assert recipe.evaluation["benchmarks"][name]["limit"] is not None, name
    assert "docs/results-qwen-code.md" in text
    assert (Path(__file__).resolve().parents[1] / "docs" / "results-qwen-code.md").is_file()
    assert cfg.generation.vllm == {"dtype": "bfloat16"}     # the pilot's bf16 check, in the recipe's comment


def test_qwen_code_pilot_is_base_and_sft_seed0_on_a_subset_with_the_studys_settings(data_dir, tmp_path):
    from conftest import run_repro  # noqa: PLC0415

    from repro.driver.grid import plan  # noqa: PLC0415

    pilot, study = load_recipe("qwen-code-pilot"), load_recipe("qwen-code")
    assert {c.label for c in plan(pilot)} == {"mbpp/base/seed0", "mbpp/sft/seed0"}
    # what decides how a cell is trained and judged is shared; what the pilot measured and then changed is not:
    # the study generates in bf16 (the pilot in fp32, then checked bf16 on its items) and halves the forgetting stage
    assert pilot.model == study.model and pilot.train == study.train
    assert {k: v for k, v in pilot.generation.items() if k != "vllm"} == \
        {k: v for k, v in study.generation.items() if k != "vllm"}
    p, s = resolve(pilot), resolve(study)
    assert p.tasks["mbpp"].predict == s.tasks["mbpp"].predict       # the same caps: costs per item carry over
    assert 0 < p.tasks["mbpp"].train < 374 and 0 < p.tasks["mbpp"].test < 500
    assert set(pilot.evaluation["benchmarks"]) == HEADLINE
    measured = {"benchmarks", "forgetting_prompts", "cross_domain_kl_texts"}
    assert {k: v for k, v in pilot.evaluation.items() if k not in measured} == \
        {k: v for k, v in study.evaluation.items() if k not in measured}
    assert not bare_knobs("qwen-code-pilot")
    for preset, n in (("qwen-code-pilot", 2), ("qwen-code", 5)):
        proc = run_repro("run", "--preset", preset, "--dry-run", "--data-dir", str(data_dir),
                         "--work-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"{n} cells: 0 done, 0 trained, 0 targets, {n} todo" in proc.stdout, proc.stdout


def test_qwen_math_pilot_is_gsm8k_base_and_sft_with_qwen_codes_settings_in_fp32():
    """Issue 27's GSM8K pilot: base + SFT seed 0 on GSM8K subsets, trained, generated and scored as qwen-code but in
    fp32 (which every CPU computes natively), with qwen-code's benchmark settings: the same benchmark items."""
    from repro.driver.grid import plan  # noqa: PLC0415

    pilot, study = load_recipe("qwen-math-pilot"), load_recipe("qwen-code")
    assert {c.label for c in plan(pilot)} == {"gsm8k/base/seed0", "gsm8k/sft/seed0"}
    assert pilot.train.pop("precision") == "fp32" and study.train.pop("precision") == "bf16-autocast"
    assert pilot.generation["vllm"].pop("dtype") == "float32" and study.generation["vllm"].pop("dtype") == "bfloat16"
    assert pilot.model == study.model and pilot.train == study.train and pilot.generation == study.generation
    assert {k: v for k, v in pilot.evaluation.items() if k != "cross_task"} == \
        {k: v for k, v in study.evaluation.items() if k != "cross_task"}
    p, s = resolve(pilot), resolve(study)
    identity = {"model": "same-model", "adapter": None}
    assert p.benchmark_cache_key(identity) == s.benchmark_cache_key(identity)
    assert 0 < p.tasks["gsm8k"].train < 7473 and 0 < p.tasks["gsm8k"].test < 1319
    assert not bare_knobs("qwen-math-pilot")


def test_qwen_math_is_the_pilots_design_grown_to_base_sft_s3ft_on_two_seeds(data_dir):
    """Issue 27's GSM8K study: the pilot's model, fp32 training and decoding, answer caps and benchmark items, with
    S3FT and a second seed added, a test subset sized by the pilot's power table that holds the pilot's 100 test
    items (so the base cell reuses their answers), and the pilot's training questions (so their gold log p)."""
    from repro.driver.cell import CellRunner  # noqa: PLC0415
    from repro.driver.grid import plan  # noqa: PLC0415

    study, pilot = load_recipe("qwen-math"), load_recipe("qwen-math-pilot")
    assert study.methods == ["base", "sft", "s3ft"] and study.seeds == [0, 1] and not study.method_seeds
    # seed-major: a session that ends after three cells leaves a whole one-seed comparison committed
    assert [c.label for c in plan(study)] == ["gsm8k/base/seed0", "gsm8k/sft/seed0", "gsm8k/s3ft/seed0",
                                              "gsm8k/sft/seed1", "gsm8k/s3ft/seed1"]
    assert study.model == pilot.model and study.train == pilot.train and study.generation == pilot.generation
    assert study.train["precision"] == "fp32" and study.generation["vllm"] == {"dtype": "float32"}
    assert study.evaluation.pop("forgetting_prompts") < pilot.evaluation.pop("forgetting_prompts")
    assert study.evaluation == pilot.evaluation
    s, p = resolve(study), resolve(pilot)
    assert s.tasks["gsm8k"].predict == p.tasks["gsm8k"].predict and \
        s.tasks["gsm8k"].paraphrase == p.tasks["gsm8k"].paraphrase
    assert s.tasks["gsm8k"].train == p.tasks["gsm8k"].train and p.tasks["gsm8k"].test < s.tasks["gsm8k"].test < 1319
    runners = [CellRunner(r, data_dir=data_dir, work_root=Path("/nonexistent"), results_root=Path("/nonexistent"),
                          progress=False) for r in (study, pilot)]
    ids = [{split: {ex["id"] for ex in r.examples("gsm8k", split)} for split in ("train", "test")} for r in runners]
    assert ids[0]["train"] == ids[1]["train"] and ids[1]["test"] < ids[0]["test"]
    assert not bare_knobs("qwen-math")
