"""MBPP judge: pull the code out of a response, run it with the task's asserts in the sandbox.

The program that runs is ``test_setup_code + extracted code + asserts + a nonce print``. It is correct only
if it exits with status 0 *and* printed the per-run nonce that follows the asserts, so a program that
leaves early with ``sys.exit(0)`` / ``os._exit(0)`` before the asserts ran is not.
"""
from __future__ import annotations

import os
import re
import secrets
import signal
import textwrap
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from evals.judges import Verdict
from evals.judges.sandbox import SandboxResult, run_python

JUDGE_VERSION = "mbpp-exec-v2"

_FENCE = re.compile(r"^[ \t]*```")
_PYTHONISH = {"", "python", "py", "python3", "py3"}
_DEFINES = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+\w|^[A-Za-z_]\w*[ \t]*=[ \t]*lambda\b", re.M)
_BEGIN = re.compile(r"\[\[?BEGIN\]\]?")
_DONE = re.compile(r"\[\[?DONE\]\]?")
# Lines that only occur in code; used to tell bare code from prose when there are no fences or markers.
_CODE_LINE = re.compile(
    r"^[ \t]*(?:(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(|class[ \t]+\w+|import[ \t]+\w|from[ \t]+[\w.]+[ \t]+import[ \t]"
    r"|return\b|raise\b|pass$|(?:if|elif|for|while|with|try|except|else|finally)\b[^\n]*:"
    r"|[A-Za-z_][\w.]*(?:\[[^\]]*\])?[ \t]*(?:[-+*/%|&^]|//|\*\*)?=[^=]|print[ \t]*\()",
    re.M,
)
_MAX_REASON = 200


def extract_code(response: str) -> str | None:
    """The code in a model response, or None when it contains none.

    [BEGIN]...[DONE] markers (also doubled) win; inside them, or otherwise, fenced blocks are used,
    preferring the first Python/plain block that defines something; a fence left open by a truncated
    response runs to the end. With neither, the bare text counts if it looks like code.
    """
    text = response.replace("\r\n", "\n").replace("\r", "\n")
    begin = _BEGIN.search(text)
    if begin or _DONE.search(text):
        # A missing [BEGIN] is the usual few-shot completion: the prompt ended with it.
        body = text[begin.end():] if begin else text
        done = _DONE.search(body)
        text = _unquote((body[:done.start()] if done else body).strip("\n"))
        fenced = _from_fences(text)
        code = fenced if fenced is not None else text
        return code if code.strip() else None
    fenced = _from_fences(text)
    if fenced is not None:
        return fenced if fenced.strip() else None
    return text.strip("\n") if _CODE_LINE.search(text) else None


def _from_fences(text: str) -> str | None:
    blocks: list[tuple[str, str]] = []  # (language, body)
    lang, body = None, []
    for line in text.split("\n"):
        if _FENCE.match(line):
            if lang is None:
                lang, body = line.strip()[3:].strip().lower(), []
            else:
                blocks.append((lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    if lang is not None:  # unterminated: the response was cut off inside the block
        blocks.append((lang, "\n".join(body)))
    if not blocks:
        return None
    candidates = [b for lang, b in blocks if (lang.split() or [""])[0] in _PYTHONISH] or [b for _, b in blocks]
    # dedent: fences nested in a list item are indented as a whole
    return textwrap.dedent(next((b for b in candidates if _DEFINES.search(b)), candidates[0]))


def _unquote(code: str) -> str:
    """The original MBPP few-shot prompt shows solutions as [BEGIN] 'code' [DONE]; models copy the quotes."""
    s = code.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" and not s.startswith(s[0] * 3) \
            and _CODE_LINE.match(s[1:-1]):  # not a program that merely starts and ends with a string
        return s[1:-1]
    return code


def judge_code(response: str, test_list: list[str], test_setup_code: str = "", *,
               timeout: float = 10.0) -> Verdict:
    """Run `test_list` against the code in `response`; correct only if every assert passed."""
    code = extract_code(response)
    if code is None:
        return Verdict(False, "no code found", None)
    nonce = secrets.token_hex(16)
    program, regions = _program(code, test_list, test_setup_code.replace("\r\n", "\n"), nonce)
    res = run_python(program, timeout=timeout)
    return Verdict(*_verdict(res, nonce, regions, test_list, timeout), code)


def judge_code_many(items: list[tuple[str, list[str], str]], *, workers: int | None = None,
                    timeout: float = 10.0, progress: bool = False) -> list[Verdict]:
    """judge_code over (response, test_list, test_setup_code) items in parallel; verdicts in input order."""
    if not items:
        return []

    workers = max(1, min(workers or os.cpu_count() or 1, len(items)))
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(items), desc="mbpp judge", disable=not progress) as bar:
        def one(item: tuple[str, list[str], str]) -> Verdict:
            verdict = judge_code(item[0], item[1], item[2] if len(item) > 2 else "", timeout=timeout)
            bar.update(1)
            return verdict

        return list(pool.map(one, items))


# ---------------------------------------------------------------- program and verdict


def _program(code: str, tests: list[str], setup: str, nonce: str) -> tuple[str, list[tuple[str, int, int]]]:
    """The program text and the 1-based line ranges of its parts: ("setup"|"code"|"assert i", first, last)."""
    lines: list[str] = []
    regions = []

    def add(name: str, text: str) -> None:
        part = text.split("\n")
        regions.append((name, len(lines) + 1, len(lines) + len(part)))
        lines.extend(part)

    add("code", code)
    if setup.strip():       # after the code: MBPP's setup code builds objects of classes the solution defines
        add("setup", setup)
    for i, test in enumerate(tests):
        add(f"assert {i}", test.replace("\r\n", "\n").strip("\n"))
    # os.write: immune to the code having replaced or closed sys.stdout's buffer
    lines.append(f"__import__('os').write(1, b'\\n{nonce}\\n')")
    return "\n".join(lines) + "\n", regions


def _verdict(res: SandboxResult, nonce: str, regions: list[tuple[str, int, int]], tests: list[str],
             timeout: float) -> tuple[bool, str]:
    n = len(tests)
    if res.output_truncated:
        return False, "output limit exceeded"
    if res.timed_out:
        return False, f"timeout after {timeout:.1f}s"
    if res.returncode == 0 and nonce in res.stdout:
        return True, f"passed {n}/{n} asserts" if n else "ran to completion (no asserts)"
    if res.returncode == 0:
        return False, "exited with code 0 before the asserts finished"
    exc = _exception_line(res.stderr)
    rc = res.returncode
    if exc.startswith("MemoryError"):
        return False, "killed: memory limit (MemoryError)"
    if rc is not None and 128 < rc <= 128 + 64 and not exc:
        return False, f"killed: {_signal_reason(rc - 128)}"
    where = _failing_region(res.stderr, regions)
    if where is not None and where.startswith("assert "):
        i = int(where.split()[1])
        shown = _short(tests[i].strip())
        if exc.split(":")[0] == "AssertionError":
            return False, _short(f"AssertionError: {shown} (passed {i}/{n})")
        return False, _short(f"{exc or f'exit code {rc}'} in {shown} (passed {i}/{n})")
    suffix = " (in test_setup_code)" if where == "setup" else ""
    return False, _short(f"exit code {rc}: {exc}{suffix}" if exc else f"exit code {rc}")


def _signal_reason(sig: int) -> str:
    if sig == signal.SIGXCPU:
        return "CPU time limit"
    if sig == signal.SIGXFSZ:
        return "file size limit"
    if sig == signal.SIGKILL:
        return "SIGKILL"
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _exception_line(stderr: str) -> str:
    """The "Type: message" line that ends the last traceback (or a SyntaxError report), if any."""
    for line in reversed(stderr.rstrip().split("\n")):
        if line and not line[0].isspace():
            return line.strip() if re.match(r"[A-Za-z_][\w.]*(?::|$)", line) else ""
    return ""


def _failing_region(stderr: str, regions: list[tuple[str, int, int]]) -> str | None:
    """Which part of the program the last traceback started in (its first frame in prog.py)."""
    tail = stderr[stderr.rfind("Traceback (most recent call last):"):] if "Traceback" in stderr else stderr
    m = re.search(r'File "[^"]*prog\.py", line (\d+)', tail)
    if not m:
        return None
    line = int(m.group(1))
    return next((name for name, first, last in regions if first <= line <= last), None)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON - 3] + "..."
