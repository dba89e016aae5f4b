"""House rules that a reviewer would otherwise have to remember: imports at the top of a module except for heavy
optional libraries, and a command line that starts without them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("repro", "evals", "methods")

#: Libraries whose import costs seconds or needs an optional extra: the only ones a function may import, so that
#: `python -m repro ls` or `validate` never loads them. Three of our modules import them at module level, so
#: importing one of those is importing torch or lm-eval: `evals.lm_backend` (subclasses lm-eval's classes),
#: `methods.train` (the training core) and `repro.runtime.scoring` (log-likelihoods).
HEAVY = {"torch", "transformers", "peft", "accelerate", "lm_eval", "vllm", "ray", "deepspeed", "datasets",
         "matplotlib"}
HEAVY_PROJECT = {"evals.lm_backend", "methods.train", "repro.runtime.scoring"}
# 45: vLLM CPU support (issue 26) adds platform and attention-kernel checks that must not import vLLM at start-up.
MAX_FUNCTION_LEVEL_IMPORTS = 45


def _function_level_imports() -> list[tuple[str, int, str]]:
    """(file, line, module) of every import statement inside a function body."""
    found = []
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")] + [REPO / "paper_tables.py"]
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        seen: set[int] = set()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                    seen.add(id(node))
                    if isinstance(node, ast.ImportFrom):
                        name = "." * node.level + (node.module or "")
                    else:
                        name = node.names[0].name
                    found.append((str(path.relative_to(REPO)), node.lineno, name))
    return found


def test_function_level_imports_are_only_heavy_libraries():
    imports = _function_level_imports()
    light = [f"{p}:{n} imports {m}" for p, n, m in imports
             if m.split(".")[0] not in HEAVY and not any(m == h or m.startswith(h + ".") for h in HEAVY_PROJECT)]
    assert not light, "import these at the top of the module (only heavy optional libraries may wait):\n" + \
        "\n".join(light)
    assert len(imports) < MAX_FUNCTION_LEVEL_IMPORTS, f"{len(imports)} function-level imports"


def test_command_line_starts_without_heavy_libraries():
    code = ("import sys, runpy; sys.argv = ['repro', 'ls', 'methods']\n"
            "try:\n    runpy.run_module('repro', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
