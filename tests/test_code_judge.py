"""MBPP judge: code extraction, verdicts on real MBPP rows, and adversarial programs."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import sandbox_attacks
from conftest import procs_with, run_as_normal_user

from evals.judges import Verdict, sandbox
from evals.judges.code import JUDGE_VERSION, extract_code, judge_code, judge_code_many

# MBPP task 2, verbatim (including the dataset's \r\n line endings)
SIMILAR_CODE = ("def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
                "  return (res) ")
SIMILAR_TESTS = [
    "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
    "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
    "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
]
# MBPP task 3
PRIME_CODE = ("import math\r\ndef is_not_prime(n):\r\n    result = False\r\n"
              "    for i in range(2,int(math.sqrt(n)) + 1):\r\n        if n % i == 0:\r\n            result = True\r\n"
              "    return result")
PRIME_TESTS = ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True", "assert is_not_prime(35) == True"]
# MBPP task 4
HEAP_CODE = ("import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n"
             "  return largest_nums")
HEAP_TESTS = [
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
    "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
]
WRONG_SIMILAR = "def similar_elements(a, b):\n    return (4, 5)\n"

# Every contained mode is tested; only bwrap may be missing (a fresh machine has no bubblewrap: it gets unshare).
CONTAINED_MODES = [pytest.param("unshare"),
                   pytest.param("bwrap", marks=pytest.mark.skipif(sandbox._probe("bwrap") is None,
                                                                   reason="bubblewrap not installed here"))]


def fenced(code: str, lang: str = "python") -> str:
    return f"Here is my solution:\n```{lang}\n{code}\n```\nIt uses sets."


def judge_similar(code: str, timeout: float = 3.0) -> Verdict:
    return judge_code(fenced(code), SIMILAR_TESTS, timeout=timeout)


def assert_judge_still_works() -> None:
    verdict = judge_code(fenced(SIMILAR_CODE), SIMILAR_TESTS)
    assert verdict.correct, verdict


# ---------------------------------------------------------------- extraction


def test_version():
    assert JUDGE_VERSION == "mbpp-exec-v2"


def test_extract_python_fence():
    assert extract_code(fenced("def f():\n    return 1")) == "def f():\n    return 1"


def test_extract_plain_fence():
    assert extract_code("Sure.\n```\nx = 1\n```\n") == "x = 1"


def test_extract_prefers_block_that_defines_something():
    response = ("Call it like this:\n```python\nprint(f(2))\n```\n"
                "Definition:\n```python\ndef f(x):\n    return x\n```\n"
                "Another:\n```python\ndef g():\n    pass\n```")
    assert extract_code(response) == "def f(x):\n    return x"


def test_extract_first_block_when_none_defines():
    assert extract_code("```python\nprint(1)\n```\n```python\nprint(2)\n```") == "print(1)"


def test_extract_prefers_python_over_other_languages():
    assert extract_code("```bash\npip install x\n```\n```py\nimport x\n```") == "import x"


def test_extract_unterminated_fence():
    assert extract_code("Solution:\n```python\ndef f(x):\n    return x +") == "def f(x):\n    return x +"


def test_extract_begin_done():
    response = "[BEGIN]\ndef f(x):\n    return x\n[DONE]\nTask 2: write another function"
    assert extract_code(response) == "def f(x):\n    return x"


def test_extract_double_brackets_and_quotes():
    response = "[[BEGIN]]\n 'def f(x):\n    return x' \n[[DONE]]"
    assert extract_code(response) == "def f(x):\n    return x"


def test_extract_keeps_code_that_starts_and_ends_with_a_string():
    assert extract_code("[BEGIN]\n\"a\" if True else \"b\"\n[DONE]") == "\"a\" if True else \"b\""


def test_extract_indented_fence():
    assert extract_code("1. Define it:\n   ```python\n   def f():\n       return 1\n   ```") == "def f():\n    return 1"


def test_extract_done_without_begin():
    # few-shot completion: the prompt ended with [BEGIN]
    assert extract_code("def f(x):\n    return x\n[DONE]\n\nYou are an expert") == "def f(x):\n    return x"


def test_extract_fence_inside_markers():
    assert extract_code("[BEGIN]\n```python\nx = 1\n```\n[DONE]") == "x = 1"


def test_extract_bare_code():
    assert extract_code("def f(x):\n    return x\n") == "def f(x):\n    return x"


def test_extract_crlf():
    assert extract_code("```python\r\ndef f():\r\n    return 1\r\n```\r\n") == "def f():\n    return 1"
    assert extract_code(SIMILAR_CODE) == SIMILAR_CODE.replace("\r\n", "\n")


def test_extract_prose_only():
    assert extract_code("I am sorry, I cannot solve this problem. The answer depends on the input.") is None
    assert extract_code("") is None
    assert extract_code("```python\n\n```") is None


# ---------------------------------------------------------------- verdicts


def test_prose_only_is_incorrect():
    verdict = judge_code("I don't know how to do that.", SIMILAR_TESTS)
    assert verdict == Verdict(False, "no code found", None)


@pytest.mark.parametrize(("code", "tests"), [(SIMILAR_CODE, SIMILAR_TESTS), (PRIME_CODE, PRIME_TESTS),
                                             (HEAP_CODE, HEAP_TESTS)], ids=["task2", "task3", "task4"])
def test_reference_solutions_pass(code, tests):
    verdict = judge_code(fenced(code), tests)
    assert verdict.correct, verdict
    assert verdict.reason == "passed 3/3 asserts"
    assert verdict.extracted == code.replace("\r\n", "\n")


def test_reference_solution_in_begin_done_passes():
    verdict = judge_code(f"[BEGIN]\n '{SIMILAR_CODE}' \n[DONE]", SIMILAR_TESTS)
    assert verdict.correct, verdict


def test_setup_code_runs_first():
    setup = "OFFSET = 10\r\n"
    code = "def shift(x):\n    return x + OFFSET"
    assert judge_code(fenced(code), ["assert shift(1) == 11"], setup).correct
    assert not judge_code(fenced(code), ["assert shift(1) == 11"]).correct


def test_wrong_answer_names_the_assert():
    verdict = judge_similar(WRONG_SIMILAR)
    assert not verdict.correct
    assert verdict.reason.startswith("AssertionError: assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)")
    assert "passed 1/3" in verdict.reason


def test_exception_inside_an_assert():
    verdict = judge_similar("def similar_elements(a, b):\n    return a + None")
    assert not verdict.correct and verdict.reason.startswith("TypeError")
    assert "passed 0/3" in verdict.reason


def test_syntax_error():
    verdict = judge_similar("def similar_elements(a, b)\n    return a")
    assert not verdict.correct and "SyntaxError" in verdict.reason


def test_name_error_at_top_level():
    verdict = judge_similar("x = undefined_name")
    assert not verdict.correct and verdict.reason.startswith("exit code 1: NameError")


def test_reason_is_short():
    verdict = judge_similar(f"raise ValueError({'x' * 5000!r})")
    assert not verdict.correct and len(verdict.reason) <= 200


# ---------------------------------------------------------------- adversarial


def test_infinite_loop():
    verdict = judge_similar("def similar_elements(a, b):\n    while True:\n        pass", timeout=2)
    assert verdict == Verdict(False, "timeout after 2.0s", "def similar_elements(a, b):\n    while True:\n        pass")
    assert_judge_still_works()


def test_memory_bomb():
    verdict = judge_similar("blob = bytearray(8 * 1024**3)\n" + SIMILAR_CODE)
    assert not verdict.correct and "memory" in verdict.reason
    assert_judge_still_works()


@pytest.mark.parametrize("exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit",
                                       "quit()"])
def test_early_exit_before_asserts(exit_call):
    verdict = judge_similar(WRONG_SIMILAR + exit_call)
    assert not verdict.correct
    assert verdict.reason == "exited with code 0 before the asserts finished"


def test_kill_parent():
    kill = "import os\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError:\n    pass\n"
    verdict = judge_similar(kill + WRONG_SIMILAR)
    assert not verdict.correct
    assert_judge_still_works()


def test_huge_stdout():
    verdict = judge_similar("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * 1_000_000)\n" + SIMILAR_CODE)
    assert verdict.correct is False and verdict.reason == "output limit exceeded"
    assert_judge_still_works()


# ---------------------------------------------------------------- the adversarial set, in every mode, as root and
# as a normal user: contained (nothing of the user's changed, nothing left running, no connection, no secret)
# and judged incorrect (each attack is followed by the correct solution, so "correct" would mean it got through)


class _Machine:
    """The user's things an attack could reach, and the checks that they are untouched."""

    def __init__(self, home: str, owner: int) -> None:
        self.tag = uuid.uuid4().hex
        self.home = home
        self.victim = f"/tmp/s3ft-victim-{self.tag}"
        self.home_file = os.path.join(home, f"s3ft-victim-{self.tag}")
        for path in (self.victim, self.home_file):
            Path(path).write_text("precious")
            os.chown(path, owner, owner)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.server.setblocking(False)
        self.ctx = {"victim": self.victim, "home": home, "home_file": self.home_file, "tag": self.tag,
                    "marker": f"s3ft-attack-{self.tag}", "port": self.server.getsockname()[1],
                    "secret_name": "S3FT_TEST_SECRET"}

    def assert_untouched(self) -> None:
        time.sleep(1.5)       # the daemon's deadline: it would have acted by now
        for path in (self.victim, self.home_file):
            assert Path(path).read_text() == "precious", path
        for path in (f"/tmp/s3ft-{self.tag}", f"/tmp/s3ft-{self.tag}-daemon", os.path.join(self.home,
                                                                                          f"s3ft-{self.tag}")):
            assert not os.path.exists(path), f"{path} was written"
        assert procs_with(self.ctx["marker"]) == [], "processes of the run survived it"
        with pytest.raises(BlockingIOError):
            self.server.accept()

    def close(self) -> None:
        self.server.close()
        for path in (self.victim, self.home_file):
            Path(path).unlink(missing_ok=True)


def _assert_all_incorrect(verdicts: dict) -> None:
    assert set(verdicts) == set(sandbox_attacks.attacks({k: "x" for k in ("victim", "home", "home_file", "tag",
                                                                          "marker", "port", "secret_name")}))
    got_through = {name: reason for name, (correct, reason) in verdicts.items() if correct}
    assert not got_through, f"attacks judged correct (= not contained): {got_through}"


@pytest.mark.parametrize("mode", CONTAINED_MODES)
def test_attacks_are_contained_as_this_user(mode, monkeypatch):
    monkeypatch.setenv(sandbox.FORCE_ENV, mode)
    monkeypatch.setenv("S3FT_TEST_SECRET", sandbox_attacks.SECRET_VALUE)
    machine = _Machine(os.path.expanduser("~"), os.geteuid())
    try:
        verdicts = sandbox_attacks.judge_all(machine.ctx)
        machine.assert_untouched()
    finally:
        machine.close()
    _assert_all_incorrect(verdicts)
    assert all(sandbox.isolation_mode() == mode for _ in [0])


@pytest.mark.parametrize("mode", CONTAINED_MODES)
def test_attacks_are_contained_as_a_normal_user(mode):
    """The judge itself runs as an unprivileged uid (root drops to one first): user namespaces instead of a
    throwaway uid."""
    if os.geteuid() != 0:
        pytest.skip("already a normal user: test_attacks_are_contained_as_this_user is this case")
    uid = 1_400_000_000 + secrets.randbelow(1_000_000)
    home = Path(tempfile.mkdtemp(prefix="s3ft-home-"))     # directly in /tmp: pytest's tmp_path is root-only
    os.chown(home, uid, uid)
    machine = _Machine(str(home), uid)
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "LANG": "C.UTF-8", sandbox.FORCE_ENV: mode,
           "S3FT_TEST_SECRET": sandbox_attacks.SECRET_VALUE}
    script = str(Path(__file__).with_name("sandbox_attacks.py"))
    try:
        proc = run_as_normal_user([sys.executable, script, json.dumps(machine.ctx)], uid=uid, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        verdicts = json.loads(proc.stdout.strip().splitlines()[-1])
        machine.assert_untouched()
    finally:
        machine.close()
        shutil.rmtree(home, ignore_errors=True)
    _assert_all_incorrect(verdicts)


# ---------------------------------------------------------------- parallel


def test_judge_code_many_keeps_order():
    items = [
        (fenced(SIMILAR_CODE), SIMILAR_TESTS, ""),
        (fenced(WRONG_SIMILAR), SIMILAR_TESTS, ""),
        (f"[BEGIN]\n{PRIME_CODE}\n[DONE]", PRIME_TESTS, ""),
        ("no code here, sorry.", PRIME_TESTS, ""),
        (fenced(HEAP_CODE), HEAP_TESTS, ""),
        (fenced("def heap_queue_largest(nums, n):\n    while True:\n        pass"), HEAP_TESTS, ""),
        (fenced("def shift(x):\n    return x + OFFSET"), ["assert shift(1) == 11"], "OFFSET = 10"),
        (fenced("import sys\nsys.exit(0)"), PRIME_TESTS, ""),
    ]
    verdicts = judge_code_many(items, workers=4, timeout=2, progress=True)
    assert [v.correct for v in verdicts] == [True, False, True, False, True, False, True, False]
    assert verdicts[3].reason == "no code found"
    assert verdicts[5].reason == "timeout after 2.0s"
    assert verdicts[1].reason.startswith("AssertionError")
    assert judge_code_many([]) == []
