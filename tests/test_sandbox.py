"""The sandbox contains what it runs: time, memory, processes, output, files, network, escaped daemons."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path

import pytest
from conftest import procs_with

from evals.judges import sandbox
from evals.judges.sandbox import SandboxResult, isolation_mode, run_python

MODE = isolation_mode()   # raises SandboxUnavailable where no contained mode works: this suite then fails


def daemon_program(marker: str, path: str, delay: float) -> str:
    """Double fork + setsid: the grandchild sleeps, then writes `path`; the program itself exits at once."""
    return f"""
import os, sys
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        code = "import time; time.sleep({delay}); open({path!r}, 'w').write('escaped')"
        os.execv(sys.executable, [sys.executable, "-c", code, {marker!r}])
    os._exit(0)
os.wait()
print("parent done")
"""


def fork_bomb(marker: str, n: int = 300) -> str:
    """Bounded so that a failed containment cannot take the machine down: n children that sleep 30 s."""
    return f"""
import os
forked = 0
for _ in range({n}):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        try:
            os.execv("/bin/sleep", [{marker!r}, "30"])
        finally:
            os._exit(0)
    forked += 1
print("forked", forked, flush=True)
"""


def assert_works_after() -> None:
    res = run_python("print(sum(range(10)))", timeout=5)
    assert res.returncode == 0 and res.stdout == "45\n", res


def test_detection_is_cached_and_reported():
    assert MODE in sandbox.CONTAINED, "without an opt-in only a contained mode may be chosen"
    assert isolation_mode() == MODE
    res = run_python("print('hi')")
    assert isinstance(res, SandboxResult)
    assert (res.returncode, res.stdout, res.timed_out, res.output_truncated) == (0, "hi\n", False, False)
    assert res.isolation == MODE and res.wall_time > 0


def test_clean_environment_and_fresh_workdir(monkeypatch):
    monkeypatch.setenv("S3FT_TEST_SECRET", "hunter2")
    res = run_python("import os, json; print(json.dumps([dict(os.environ), os.getcwd(), os.listdir('.')]))")
    env, cwd, listing = json.loads(res.stdout)
    assert "S3FT_TEST_SECRET" not in env and "hunter2" not in res.stdout
    assert env["HOME"] == cwd and set(env) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "PWD",
                                               "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
                                               "S3FT_SANDBOX_RUN"}
    assert listing == ["prog.py"]
    assert not os.path.exists(cwd), "working directory must be deleted afterwards"


def test_exit_status_and_stderr():
    res = run_python("import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)")
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")


def test_infinite_loop_times_out():
    res = run_python("while True: pass", timeout=2)
    assert res.timed_out and res.returncode != 0
    assert res.wall_time < 6
    assert_works_after()


def test_cpu_rlimit_applies():
    # A generous wall clock: on a loaded machine 1 s of CPU can take many seconds; the CPU limit must end it.
    res = run_python("while True: pass", timeout=60, cpu_seconds=1)
    assert not res.timed_out, res
    assert res.returncode in (128 + 24, 128 + 9), res     # SIGXCPU, then SIGKILL at the hard limit


def test_memory_bomb():
    res = run_python("x = bytearray(8 * 1024**3)\nprint('allocated')", timeout=5, memory_mb=512)
    assert res.returncode != 0 and "allocated" not in res.stdout
    assert "MemoryError" in res.stderr
    assert_works_after()


def test_huge_output_is_capped():
    res = run_python("import sys\nfor _ in range(100): sys.stdout.write('x' * 1_000_000)", timeout=10,
                     max_output_bytes=1_000_000)
    assert res.output_truncated
    assert len(res.stdout) + len(res.stderr) <= 1_000_000
    assert_works_after()


def test_file_size_limit():
    res = run_python("open('big', 'wb').write(b'x' * 5_000_000)", max_file_bytes=1_000_000)
    assert res.returncode != 0 and "File too large" in res.stderr


def test_fork_bomb_is_capped_and_killed():
    marker = f"s3ft-forkbomb-{uuid.uuid4().hex}"
    res = run_python(fork_bomb(marker), timeout=5, max_processes=32)
    forked = int(res.stdout.split()[-1])
    assert forked < 32, res
    assert procs_with(marker) == []
    assert_works_after()


def test_daemonised_grandchild_is_killed():
    marker = f"s3ft-daemon-{uuid.uuid4().hex}"
    target = f"/tmp/{marker}"
    res = run_python(daemon_program(marker, target, delay=1.0), timeout=5)
    assert "parent done" in res.stdout
    assert procs_with(marker) == []
    time.sleep(1.5)
    assert not os.path.exists(target)


def test_killing_the_parent_is_contained():
    res = run_python("import os, time\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError:\n    pass\n"
                     "time.sleep(0.2)\nprint('survived')", timeout=5)
    assert res.returncode is not None
    assert_works_after()


def test_writes_do_not_reach_the_host():
    tag = uuid.uuid4().hex
    host_home = os.path.expanduser("~")
    targets = [f"/tmp/s3ft-{tag}", os.path.join(host_home, f"s3ft-{tag}"), f"/var/tmp/s3ft-{tag}",
               str(Path(__file__).resolve().parent / f"s3ft-{tag}")]
    prog = f"""
import os
written = []
for p in {targets!r} + [os.path.expanduser('~/s3ft-{tag}')]:
    try:
        open(p, 'w').write('x')
        written.append(p)
    except OSError:
        pass
print(os.getcwd())
"""
    res = run_python(prog)
    assert res.returncode == 0, res
    for p in targets + [os.path.join(res.stdout.strip(), f"s3ft-{tag}")]:
        assert not os.path.exists(p), p


def test_no_network():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        res = run_python(f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                         f"    print('connected')\nexcept OSError as e:\n    print('refused', e)", timeout=5)
        assert "connected" not in res.stdout and "refused" in res.stdout
        with pytest.raises(BlockingIOError):
            server.accept()


# ---------------------------------------------------------------- forced fallback


@pytest.fixture(scope="module")
def rlimits_mode():
    mode = sandbox._best("rlimits")
    assert mode is not None and mode.name == "rlimits"
    return mode


@pytest.fixture
def forced_rlimits(monkeypatch, rlimits_mode):
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")
    monkeypatch.setenv(sandbox.FORCE_ENV, "rlimits")
    monkeypatch.setattr(sandbox, "_warned", set())


def test_fallback_warns_loudly(forced_rlimits, caplog):
    with caplog.at_level(logging.WARNING, logger="evals.judges.sandbox"):
        res = run_python("print('ok')")
        run_python("print('ok')")
    assert res.isolation == "rlimits" and res.stdout == "ok\n"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, "warn once per process"
    assert "UNSANDBOXED" in warnings[0].getMessage() and "rlimits" in warnings[0].getMessage()


def test_fallback_kills_infinite_loop(forced_rlimits):
    res = run_python("while True: pass", timeout=2)
    assert res.timed_out and res.isolation == "rlimits" and res.wall_time < 7


def test_fallback_kills_daemonised_grandchild(forced_rlimits):
    marker = f"s3ft-daemon-{uuid.uuid4().hex}"
    target = f"/tmp/{marker}"
    res = run_python(daemon_program(marker, target, delay=1.0), timeout=5)
    assert "parent done" in res.stdout and res.isolation == "rlimits"
    assert procs_with(marker) == []
    time.sleep(1.5)
    assert not os.path.exists(target)


def test_fallback_kills_daemon_on_timeout(forced_rlimits):
    marker = f"s3ft-daemon-{uuid.uuid4().hex}"
    res = run_python(daemon_program(marker, f"/tmp/{marker}", delay=60) + "\nwhile True: pass\n", timeout=2)
    assert res.timed_out
    assert procs_with(marker) == []


def test_rlimits_is_never_chosen_without_the_opt_in(monkeypatch):
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    monkeypatch.setenv(sandbox.FORCE_ENV, "rlimits")
    with pytest.raises(sandbox.SandboxUnavailable, match="allow-unsandboxed-code"):
        run_python("print('ok')")


# ---------------------------------------------------------------- which mode a machine gets


def test_a_machine_without_bubblewrap_gets_the_unshare_mode(monkeypatch, tmp_path):
    # A fresh machine has no bubblewrap: auto-detection must still find a contained mode (no skip here).
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(sandbox.FORCE_ENV, raising=False)
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    monkeypatch.setattr(sandbox, "_probed", {})
    assert isolation_mode() == "unshare"
    res = run_python("import os; print(os.getuid())")
    assert res.isolation == "unshare" and res.returncode == 0
    assert int(res.stdout) != 0 and int(res.stdout) != os.getuid()   # a throwaway uid / the ns's nobody
    assert "unshare" in sandbox.describe()


def test_refuses_without_a_contained_mode(monkeypatch, rlimits_mode):
    # Not root, no bubblewrap, no user namespaces: simulated by the probe results.
    monkeypatch.delenv(sandbox.FORCE_ENV, raising=False)
    monkeypatch.delenv(sandbox.ALLOW_ENV, raising=False)
    monkeypatch.setattr(sandbox, "_probed", {"bwrap": None, "unshare": None, "rlimits": rlimits_mode})
    monkeypatch.setattr(sandbox, "_probe_errors", {"bwrap": "bubblewrap (bwrap) is not installed",
                                                   "unshare": "unshare: Operation not permitted"})
    with pytest.raises(sandbox.SandboxUnavailable) as err:
        run_python("print('never runs')")
    assert "install bubblewrap" in str(err.value) and "--allow-unsandboxed-code" in str(err.value)
    assert sandbox.describe().startswith("REFUSED")
    monkeypatch.setenv(sandbox.ALLOW_ENV, "1")           # the explicit opt-in
    monkeypatch.setattr(sandbox, "_warned", set())
    assert run_python("print('ok')").isolation == "rlimits"


def test_forcing_a_mode_that_does_not_work_names_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox, "_probed", {"bwrap": None})
    monkeypatch.setattr(sandbox, "_probe_errors", {"bwrap": "bubblewrap (bwrap) is not installed"})
    monkeypatch.setenv(sandbox.FORCE_ENV, "bwrap")
    with pytest.raises(sandbox.SandboxUnavailable, match="install bubblewrap"):
        isolation_mode()


def test_an_interpreter_under_tmp_is_bound_back_into_the_private_tmp(monkeypatch):
    # bwrap mounts a fresh tmpfs on /tmp: a venv living there must be bound back or the sandbox cannot start it.
    venv = Path("/tmp") / f"s3ft-venv-{uuid.uuid4().hex}"
    monkeypatch.setattr(sandbox.sys, "prefix", str(venv))
    _, rebind = sandbox._hidden_paths()
    assert str(venv) in rebind
