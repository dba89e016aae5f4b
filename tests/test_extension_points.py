"""The extension points are explicit: methods and tasks are registered by name, and an incomplete method or task
fails when it is built, not half-way into a run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from evals.judges import Verdict
from evals.tasks import TASKS, get_task
from evals.tasks.base import Split, Task, user
from methods.registry import METHODS, Method, get_method, list_methods, method_ids


# --- methods ---------------------------------------------------------------------------------------------------
def test_every_registered_method_is_a_method_under_its_own_id():
    assert method_ids() == sorted(METHODS)
    for mid in method_ids():
        method = get_method(mid)
        assert isinstance(method, Method) and method.id == mid
        assert isinstance(method.trains, bool) and method.description == list_methods()[mid]


def test_a_helper_module_next_to_the_methods_is_not_a_method(tmp_path):
    """A copy of the methods package with a helper module (no Method in it, and one that cannot even be imported
    on its own) beside the methods: `repro ls methods` lists exactly the registered methods."""
    shutil.copytree(REPO / "methods", tmp_path / "methods", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "methods" / "helpers.py").write_text(
        '"""Shared code for methods: not a method."""\nimport a_module_that_does_not_exist  # noqa: F401\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    # The copy, not the checkout, must be the `methods` the CLI imports, or the test proves nothing.
    where = subprocess.run([sys.executable, "-c", "import methods; print(methods.__file__)"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(tmp_path / "methods" / "__init__.py")
    proc = subprocess.run([sys.executable, "-m", "repro", "ls", "methods"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()}
    assert listed == set(METHODS)


def test_a_method_missing_build_targets_or_an_attribute_cannot_be_instantiated():
    class NoBuilder(Method):
        id, description, trains = "nobuilder", "no build_targets", True

    class NoTrainsFlag(Method):
        id, description = "notrains", "no trains flag"

        def build_targets(self, ctx):
            return []

    with pytest.raises(TypeError, match="build_targets"):
        NoBuilder()
    with pytest.raises(TypeError, match="trains"):
        NoTrainsFlag()


def test_a_method_registered_under_another_id_or_not_a_method_is_refused(monkeypatch):
    monkeypatch.setitem(METHODS, "other", "methods.ssr:SSR")
    monkeypatch.setitem(METHODS, "plain", "methods.targets:TargetRecord")
    with pytest.raises(TypeError, match="registered as 'other'"):
        get_method("other")
    with pytest.raises(TypeError, match="not a Method subclass"):
        get_method("plain")


# --- tasks -----------------------------------------------------------------------------------------------------
class _Almost(Task):
    """Everything a task needs but a judge."""

    name, description, template_version, judge_version = "almost", "no judge", "v1", "v1"

    def load_split(self, split, data_dir):
        return Split([{"id": "a", "q": "?", "a": "!"}], {})

    def predict_messages(self, ex):
        return user(ex["q"])

    def paraphrase_messages(self, ex):
        return user(ex["a"])

    def gold_response(self, ex):
        return ex["a"]


def test_a_task_missing_a_method_fails_when_instantiated():
    assert Task.__abstractmethods__ == {"load_split", "predict_messages", "paraphrase_messages", "gold_response",
                                        "judge"}
    with pytest.raises(TypeError, match="judge"):
        _Almost()

    class Complete(_Almost):
        def judge(self, ex, response):
            return Verdict(response == ex["a"], "exact")

    task = Complete()
    assert task.judge_many(task.load("train", None), ["!"]) == [Verdict(True, "exact")]


def test_every_registered_task_is_complete():
    for name in TASKS:
        assert not get_task(name).__abstractmethods__
