"""The adversarial MBPP answers of issue 11, shared by tests/test_code_judge.py and by the subprocess that runs
them as a normal (unprivileged) user. Each answer attacks the machine *and* contains the correct solution, so
it is judged correct exactly when the attack got through: contained <=> judged incorrect.

Run as a script (``python sandbox_attacks.py CONTEXT_JSON``) it judges every attack with the current sandbox mode
($S3FT_SANDBOX) and prints {name: [correct, reason]} as JSON; the caller checks the machine afterwards.
"""
from __future__ import annotations

import json
import sys

TESTS = [
    "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
    "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
    "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
]
CORRECT = "\ndef similar_elements(a, b):\n    return tuple(sorted(set(a) & set(b)))\n"
SECRET_VALUE = "hunter2-s3ft-secret"


def attacks(ctx: dict) -> dict[str, str]:
    """ctx: victim (a file of the user's in /tmp), home (the user's real home), home_file (a file in it), tag (a
    fresh name), marker (a string to find leftover processes by), port (a listener on 127.0.0.1),
    secret_name (an environment variable of the judge holding SECRET_VALUE)."""
    victim, home, tag, marker = ctx["victim"], ctx["home"], ctx["tag"], ctx["marker"]
    return {
        # remove the user's file in /tmp (root-owned when the judge is root)
        "delete_tmp_file": f"import os\nos.remove({victim!r})\n" + CORRECT,
        # and one in the user's home
        "delete_home_file": f"import os\nos.remove({ctx['home_file']!r})\n" + CORRECT,
        # 300 sleeping children, then the function: passes only if the process cap did not apply
        "fork_300": (f"import os\nfor _ in range(300):\n    if os.fork() == 0:\n"
                     f"        os.execv('/bin/sleep', [{marker!r}, '30'])\n" + CORRECT),
        # files in /tmp and in the real home (the program's $HOME is its working directory)
        "write_home_and_tmp": (f"import os\nopen('/tmp/s3ft-{tag}', 'w').write('x')\n"
                               f"open(os.path.join({home!r}, 's3ft-{tag}'), 'w').write('x')\n" + CORRECT),
        # talk to a service on the machine
        "socket_to_local_listener": (f"import socket\nsocket.create_connection(('127.0.0.1', {ctx['port']}), "
                                     f"timeout=2).sendall(b'hello from the sandbox')\n" + CORRECT),
        # leave at once (exit 0) while a setsid grandchild stays behind to delete the victim and run the asserts
        "setsid_daemon": (f"import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                          f"        sys.argv[0] = {marker!r}\n        time.sleep(1)\n"
                          f"        try:\n            os.remove({victim!r})\n        except OSError:\n"
                          f"            pass\n        open('/tmp/s3ft-{tag}-daemon', 'w').write('escaped')\n"
                          f"        os.execv('/bin/sleep', [{marker!r}, '60'])\n    os._exit(0)\n"
                          f"os._exit(0)\n" + CORRECT),
        # find the judge's secret in the environment or in any process's /proc/PID/environ
        "read_environment_secret": (
            f"import glob, os\nleak = os.environ.get({ctx['secret_name']!r})\n"
            f"for p in glob.glob('/proc/[0-9]*/environ'):\n    try:\n"
            f"        leak = leak or ({SECRET_VALUE!r}.encode() in open(p, 'rb').read() and p)\n"
            f"    except OSError:\n        pass\nassert leak, 'no secret found'\n" + CORRECT),
    }


def judge_all(ctx: dict) -> dict[str, list]:
    from evals.judges.code import judge_code  # noqa: PLC0415

    out = {}
    for name, code in attacks(ctx).items():
        v = judge_code(f"```python\n{code}\n```", TESTS, timeout=5.0)
        out[name] = [v.correct, v.reason]
    return out


if __name__ == "__main__":
    print(json.dumps(judge_all(json.loads(sys.argv[1]))))
