"""Recipe loading and the cross-task setting (true / false / a list of the recipe's tasks)."""
from __future__ import annotations

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
