"""Run an untrusted Python program in a throwaway sandbox and report what happened.

Generated code never runs with the user's privileges. Isolation modes, strongest first, picked once per process
by actually running a trivial program (or forced with ``S3FT_SANDBOX=bwrap|unshare|rlimits``):

* ``bwrap``   bubblewrap: new user/pid/net/ipc/uts namespaces, the host filesystem read-only, a private
              /tmp, the host home hidden, only a fresh working directory writable.
* ``unshare`` the same, built here with unshare(2) and mount(2) when bubblewrap is missing: new mount, pid,
              net, ipc and uts namespaces; every host mount re-mounted read-only; private tmpfs on /tmp,
              /dev/shm, the working directory; the home, /run and root-only parents of the interpreter hidden
              behind empty tmpfs (the interpreter bound back read-only); a fresh /proc.
* ``rlimits`` no namespaces: rlimits, a subreaper launcher that kills every descendant, and a sweep for
              escapees. It contains neither the network nor file writes, so it is never chosen on its own:
              only with an explicit opt-in (``--allow-unsandboxed-code`` / ``S3FT_ALLOW_UNSANDBOXED_CODE=1``).

Who the program runs as: when the judge is root, a throwaway high uid of its own (one per concurrent run, so
RLIMIT_NPROC counts only the run's processes, and anything left with that uid is killed afterwards); bwrap
reaches it through a user namespace we build, unshare mode with setgroups/setresgid/setresuid after the mounts
are made. When the judge is a normal user, a user namespace mapped to that user: the mounts are made as the
namespace's root, then a nested user namespace (uid 65534 inside) locks them and drops every capability, so the
program cannot undo them; the filesystem it sees is read-only except its private tmpfs, and the pid namespace
hides every other process. Where no mode gives that (not root, no bubblewrap, no user namespaces),
run_python raises SandboxUnavailable, naming the fix, unless the user opted in to running unsandboxed.

In every mode the program also gets rlimits (address space, CPU time, file size, processes), a clean
environment, a fresh working directory (deleted afterwards), no_new_privs (setuid binaries cannot raise its
privileges), a wall-clock limit after which the whole process tree is killed, and stdout/stderr read through a
size cap.
"""
from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass

log = logging.getLogger(__name__)

SANDBOX_UID = 65534  # "nobody" as seen inside the namespaces
_ENV_MARKER = "S3FT_SANDBOX_RUN"
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_CLONE_NEWUSER = 0x10000000
_TMPFS_BYTES = 128 << 20  # per writable tmpfs in bwrap mode (/tmp, /dev/shm, the working directory)


@dataclass
class SandboxResult:
    returncode: int | None  # exit status; 128+N when killed by signal N (the shells' convention)
    stdout: str
    stderr: str
    timed_out: bool
    output_truncated: bool
    isolation: str  # "bwrap" | "unshare" | "rlimits"
    wall_time: float


@dataclass(frozen=True)
class _Mode:
    name: str  # "bwrap" | "unshare" | "rlimits"
    drop_uid: bool  # run as a throwaway uid (we are root); otherwise as whoever we are


# Runs first inside the sandbox: sets the limits, then replaces itself with the program. Limits are set
# here rather than before the namespaces exist so that RLIMIT_NPROC counts only the sandbox's processes.
_RUNNER = r"""
import os, resource, sys
def cap(res, soft, hard=None):
    hard = soft if hard is None else hard
    cur = resource.getrlimit(res)[1]
    if cur != resource.RLIM_INFINITY:
        soft, hard = min(soft, cur), min(hard, cur)
    resource.setrlimit(res, (soft, hard))
mem, cpu, fsize, nproc = map(int, sys.argv[1:5])
cap(resource.RLIMIT_AS, mem)
cap(resource.RLIMIT_CPU, cpu, cpu + 1)
cap(resource.RLIMIT_FSIZE, fsize)
cap(resource.RLIMIT_NPROC, nproc)
cap(resource.RLIMIT_CORE, 0)
os.closerange(3, 1 << 16)
os.execv(sys.executable, [sys.executable, "-I", "-B", "-X", "utf8", sys.argv[5]])
"""

# Creates a user namespace and waits on stdin so that the parent can write its uid/gid maps.
_USERNS_HELPER = (
    "import ctypes, sys\n"
    f"if ctypes.CDLL(None, use_errno=True).unshare({_CLONE_NEWUSER}): sys.exit(1)\n"
    "sys.stdout.write('k'); sys.stdout.flush(); sys.stdin.read()\n"
)

FORCE_ENV = "S3FT_SANDBOX"                      # bwrap | unshare | rlimits | auto (default)
ALLOW_ENV = "S3FT_ALLOW_UNSANDBOXED_CODE"      # 1: run generated code without a sandbox when none works
MODES = ("bwrap", "unshare", "rlimits")
CONTAINED = ("bwrap", "unshare")               # the modes that keep the program away from the user's files

_detect_lock = threading.Lock()
_probed: dict[str, _Mode | None] = {}          # mode name -> working variant (None: does not work here)
_probe_errors: dict[str, str] = {}             # mode name -> why it does not work
_warned: set[str] = set()

_uid_lock = threading.Lock()
_uid_base = 1_500_000_000 + (os.getpid() % 1_000_000) * 64
_uids_free: list[int] = []
_uids_made = 0
_userns_fds: dict[int, int] = {}


class SandboxUnavailable(RuntimeError):
    """No isolation mode that keeps generated code away from the user's files works here, and the user has not
    opted in to running it unsandboxed."""


# ---------------------------------------------------------------- public API


def unsandboxed_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() in {"1", "true", "yes"}


def allow_unsandboxed() -> None:
    """The explicit opt-in (``--allow-unsandboxed-code``): the rlimits fallback may run generated code."""
    os.environ[ALLOW_ENV] = "1"


def isolation_mode() -> str:
    """The isolation run_python uses here: "bwrap", "unshare" or (opted in) "rlimits"; raises SandboxUnavailable."""
    return _mode().name


def require() -> str:
    """Fail early, before hours of work, when code judging could not run: returns the mode name or raises."""
    return isolation_mode()


def describe() -> str:
    """One line for ``repro doctor`` and the start of a run; never raises."""
    try:
        mode = _mode()
    except SandboxUnavailable as e:
        return f"REFUSED - {e}"
    who = ("a throwaway uid" if mode.drop_uid else
           "host root (no throwaway uid possible)" if os.geteuid() == 0 else
           "a user namespace mapped to you, filesystem read-only" if mode.name in CONTAINED else "your own uid")
    kind = {"bwrap": "bubblewrap namespaces", "unshare": "namespaces built with unshare(2)",
            "rlimits": "UNSANDBOXED (opted in): rlimits and process-tree kill only"}[mode.name]
    extra = "" if mode.name == "bwrap" or shutil.which("bwrap") else "; bubblewrap not installed"
    return f"{mode.name} ({kind}; runs as {who}{extra})"


def run_python(
    source: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    cpu_seconds: int | None = None,
    max_output_bytes: int = 1_000_000,
    max_file_bytes: int = 10_000_000,
    max_processes: int = 64,
    mode: str | None = None,
) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; never raises for anything the program does. `mode` forces
    an isolation mode (tests); by default the strongest that works here. Raises SandboxUnavailable when no mode
    may run it."""
    chosen = _mode() if mode is None else _forced(mode)
    _warn_if_weak(chosen)
    return _execute(
        source,
        chosen,
        timeout=timeout,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds if cpu_seconds is not None else int(timeout) + 1,
        max_output_bytes=max_output_bytes,
        max_file_bytes=max_file_bytes,
        max_processes=max_processes,
    )


def available_modes() -> list[str]:
    """Every mode that works on this machine (tests run the adversarial set in each)."""
    return [m for m in MODES if _probe(m) is not None]


# ---------------------------------------------------------------- detection


def _probe(name: str) -> _Mode | None:
    with _detect_lock:
        if name not in _probed:
            _probed[name] = _best(name)
        return _probed[name]


def _fix_hint() -> str:
    return ("Fix: install bubblewrap (`apt-get install bubblewrap`, `dnf install bubblewrap`), or run as root, or "
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 / "
            "kernel.apparmor_restrict_unprivileged_userns=0). To run generated code WITHOUT a sandbox anyway - it "
            f"can then read, change and delete anything your user can - pass --allow-unsandboxed-code or set "
            f"{ALLOW_ENV}=1.")


def _forced(name: str) -> _Mode:
    if name not in MODES:
        raise ValueError(f"unknown sandbox mode {name!r} (one of {', '.join(MODES)})")
    if name == "rlimits" and not unsandboxed_allowed():
        raise SandboxUnavailable(f"sandbox mode rlimits runs generated code unsandboxed; it needs the opt-in "
                                 f"--allow-unsandboxed-code ({ALLOW_ENV}=1)")
    mode = _probe(name)
    if mode is None:
        raise SandboxUnavailable(f"sandbox mode {name} does not work here: {_probe_errors.get(name, '?')}. "
                                 + _fix_hint())
    return mode


def _mode() -> _Mode:
    force = os.environ.get(FORCE_ENV, "auto").strip().lower() or "auto"
    if force != "auto":
        return _forced(force)
    for name in CONTAINED:
        mode = _probe(name)
        if mode is not None:
            return mode
    if unsandboxed_allowed() and _probe("rlimits") is not None:
        return _probed["rlimits"]
    why = "; ".join(f"{n}: {_probe_errors.get(n, '?')}" for n in CONTAINED)
    raise SandboxUnavailable("MBPP judging runs model-generated code, and no sandbox that keeps it away from your "
                             f"files works on this machine ({why}). " + _fix_hint())


def _best(name: str) -> _Mode | None:
    """The strongest working variant of one isolation kind, or None. A variant works if it runs print('ok')."""
    if name == "bwrap" and not shutil.which("bwrap"):
        _probe_errors[name] = "bubblewrap (bwrap) is not installed"
        return None
    root = os.geteuid() == 0
    # bwrap/unshare as root always drop to a throwaway uid; as a user they map a user namespace to the user.
    # rlimits (opt-in only) drops the uid when it can.
    variants = [True, False] if name == "rlimits" and root else [root]
    for drop_uid in variants:
        mode = _Mode(name, drop_uid)
        try:
            res = _execute("print('ok')", mode, timeout=30.0, memory_mb=1024, cpu_seconds=30,
                           max_output_bytes=10_000, max_file_bytes=1_000_000, max_processes=64)
        except OSError as e:  # e.g. the userns helper could not write the uid map
            _probe_errors[name] = f"{type(e).__name__}: {e}"
            log.debug("sandbox probe %s failed: %s", mode, e)
            continue
        if res.returncode == 0 and res.stdout.strip() == "ok":
            log.info("sandbox isolation available: %s%s", mode.name, " (throwaway uid)" if mode.drop_uid else "")
            return mode
        _probe_errors[name] = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1][-300:]
        log.debug("sandbox probe %s failed: rc=%s %s", mode, res.returncode, res.stderr.strip()[-500:])
    return None


def _warn_if_weak(mode: _Mode) -> None:
    if mode.name in CONTAINED:
        return
    problems = ["no namespaces: the program can use the network and write files wherever its user may, and an "
                "escaped daemon is only best-effort killed"]
    if os.geteuid() == 0 and not mode.drop_uid:
        problems.append("it runs as host root, so the process-count limit does not apply and it can change "
                        "root-owned files")
    key = f"{mode.name}/{mode.drop_uid}"
    if key not in _warned:
        _warned.add(key)
        log.warning("!!! UNSANDBOXED generated code (isolation=%s, opted in with %s): %s. !!!", mode.name,
                    ALLOW_ENV, "; ".join(problems))


# ---------------------------------------------------------------- one run


def _execute(source: str, mode: _Mode, *, timeout: float, memory_mb: int, cpu_seconds: int,
             max_output_bytes: int, max_file_bytes: int, max_processes: int) -> SandboxResult:
    start = time.monotonic()
    uid = _acquire_uid() if mode.drop_uid else None
    workdir = tempfile.mkdtemp(prefix="s3ft-sbx-")
    marker = uuid.uuid4().hex
    try:
        prog = os.path.join(workdir, "prog.py")
        with open(prog, "w", encoding="utf-8") as f:
            f.write(source)
        os.chmod(prog, 0o644)
        if uid is not None and mode.name != "unshare":   # unshare mode builds its own workdir in a tmpfs
            os.chown(workdir, uid, uid)
        os.chmod(workdir, 0o700)
        inner = [sys.executable, "-I", "-S", "-B", "-c", _RUNNER,
                 str(memory_mb << 20), str(max(1, cpu_seconds)), str(max_file_bytes), str(max_processes), prog]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1",
               "PYTHONIOENCODING": "utf-8", _ENV_MARKER: marker}
        cmd, popen_kw = _command(mode, inner, workdir, uid)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env, cwd=workdir, start_new_session=True, **popen_kw)
        out, err, timed_out, truncated = _supervise(proc, mode, start + timeout, max_output_bytes, marker)
        return SandboxResult(
            returncode=_status(proc.returncode),
            stdout=out.decode("utf-8", "replace"),
            stderr=err.decode("utf-8", "replace"),
            timed_out=timed_out,
            output_truncated=truncated,
            isolation=mode.name,
            wall_time=time.monotonic() - start,
        )
    finally:
        _rmtree(workdir)
        if uid is not None:
            _kill_uid(uid)    # nothing of the run survives it: only then may another run get the uid
            _release_uid(uid)


def _status(rc: int | None) -> int | None:
    return 128 - rc if rc is not None and rc < 0 else rc


def _command(mode: _Mode, inner: list[str], workdir: str, uid: int | None) -> tuple[list[str], dict]:
    if mode.name == "bwrap":
        cmd = ["bwrap", "--die-with-parent", "--new-session", "--as-pid-1",
               "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        kw: dict = {}
        version = _bwrap_version()
        if uid is not None:
            # bwrap itself stays root and joins a namespace where the sandbox uid maps to the throwaway uid.
            nsfd = _userns_for(uid)
            cmd += ["--userns", str(nsfd)]
            kw["pass_fds"] = (nsfd,)
        else:
            cmd += ["--unshare-user"] + (["--disable-userns"] if version >= (0, 8) else [])
        cmd += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        # Writable places live in RAM, so each gets a size cap where bwrap can set one (0.7+); without
        # that the working directory stays on the host disk, bounded by RLIMIT_FSIZE per file only.
        sized = version >= (0, 7)
        size = ["--size", str(_TMPFS_BYTES)] if sized else []
        cmd += [*size, "--tmpfs", "/tmp", *size, "--tmpfs", "/dev/shm"]
        hidden, rebind = _hidden_paths()
        for path in hidden:
            cmd += ["--tmpfs", path]
        for path in rebind:
            cmd += ["--ro-bind", path, path]
        prog = inner[-1]
        if sized:
            cmd += [*size, "--tmpfs", workdir, "--ro-bind", prog, prog]
        else:
            cmd += ["--bind", workdir, workdir]
        for path in hidden:  # last: mount points may still have been created in them above
            cmd += ["--remount-ro", path]
        cmd += ["--chdir", workdir, "--", *inner]
        return cmd, kw
    if mode.name == "unshare":
        hidden, rebind = _hidden_paths()
        config = {"uid": uid, "prog": inner[-1], "workdir": workdir, "hidden": hidden, "rebind": rebind,
                  "tmpfs_bytes": _TMPFS_BYTES, "argv": inner}
        return [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), "--ns-launch", json.dumps(config)], {}
    launcher = [sys.executable, "-I", "-S", "-B", os.path.abspath(__file__), "--launch",
                str(uid if uid is not None else -1), "--", *inner]
    return launcher, {}


@functools.lru_cache(maxsize=1)
def _bwrap_version() -> tuple[int, ...]:
    try:
        text = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout
        return tuple(int(x) for x in text.split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return (0,)


def _hidden_paths() -> tuple[list[str], list[str]]:
    """Directories to hide behind a tmpfs (the host home, root-only parents of the interpreter) and the
    interpreter directories to bind back on top of them."""
    needed = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                                            os.path.dirname(os.path.realpath(sys.executable)))}
    # /run holds the user's sockets (D-Bus, agents): a socket file can be connected to on a read-only mount.
    hidden = {os.path.realpath(p) for p in (os.path.expanduser("~"), "/root", "/run")}
    for path in needed:
        parts = path.split("/")
        for i in range(2, len(parts)):
            parent = "/".join(parts[:i])
            try:
                if not os.stat(parent).st_mode & 0o001:  # not searchable by other users
                    hidden.add(parent)
            except OSError:
                pass
    hidden.discard("/")
    hidden = {h for h in hidden if os.path.isdir(h)}
    top = sorted(h for h in hidden if not any(h.startswith(o + "/") for o in hidden))
    # /tmp and /dev/shm become private tmpfs mounts: an interpreter (a venv) living there is bound back too.
    masked = top + ["/tmp", "/dev/shm"]
    under = [p for p in needed if any(p == h or p.startswith(h + "/") for h in masked)]
    rebind = sorted(p for p in under if not any(p.startswith(o + "/") for o in under))
    return top, rebind


# ---------------------------------------------------------------- supervision


def _supervise(proc: subprocess.Popen, mode: _Mode, deadline: float, cap: int,
               marker: str) -> tuple[bytes, bytes, bool, bool]:
    """Read output until the program ends, the deadline passes or the output cap is hit; then make sure
    every process of the run is gone. Returns stdout, stderr, timed_out, truncated."""
    out = _Output(cap)
    sel = selectors.DefaultSelector()
    for pipe in (proc.stdout, proc.stderr):
        os.set_blocking(pipe.fileno(), False)
        sel.register(pipe, selectors.EVENT_READ)
    pidfd = _pidfd(proc.pid)  # readable when the outer process exits, so we need not poll for it
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    open_pipes = [proc.stdout, proc.stderr]
    timed_out = False
    grace_end: float | None = None  # set once the outer process has exited
    try:
        while not out.truncated:
            if grace_end is None and proc.poll() is not None:
                # Normally every writer is dead by now; escaped processes may still hold the pipes.
                grace_end = time.monotonic() + 1.0
            if grace_end is not None and not open_pipes:
                break
            now = time.monotonic()
            end = grace_end if grace_end is not None else deadline
            if now >= end:
                timed_out = grace_end is None
                break
            watching_exit = pidfd is not None and pidfd in sel.get_map()
            for key, _ in sel.select(end - now if watching_exit else min(end - now, 0.05)):
                if key.fileobj == pidfd:
                    sel.unregister(pidfd)
                elif not out.read(key.fileobj):
                    sel.unregister(key.fileobj)
                    open_pipes.remove(key.fileobj)
        if proc.poll() is None:
            _kill_tree(proc, mode)
        if mode.name == "rlimits":
            _sweep(marker)
        out.drain(open_pipes, 0.5)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
        proc.stderr.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return out.get(proc.stdout), out.get(proc.stderr), timed_out, out.truncated


class _Output:
    """stdout and stderr, together at most `cap` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.used = 0
        self.truncated = False
        self.bufs: dict[object, bytearray] = {}

    def read(self, pipe) -> bool:
        """Read what is available; False at end of file."""
        try:
            data = os.read(pipe.fileno(), 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        room = self.cap - self.used
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        self.bufs.setdefault(pipe, bytearray()).extend(data)
        self.used += len(data)
        return True

    def drain(self, pipes: list, seconds: float) -> None:
        """Pick up what was still in the pipes once the writers are dead (or give up after `seconds`)."""
        end = time.monotonic() + seconds
        pipes = list(pipes)
        while pipes and not self.truncated and time.monotonic() < end:
            for pipe in list(pipes):
                if not self.read(pipe):
                    pipes.remove(pipe)
            if pipes:
                time.sleep(0.005)

    def get(self, pipe) -> bytes:
        return bytes(self.bufs.get(pipe, b""))


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _kill_tree(proc: subprocess.Popen, mode: _Mode) -> None:
    if mode.name == "rlimits":
        # The launcher kills its descendants on SIGTERM; SIGKILL would orphan them.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            pass
        _killpg(proc.pid)
        return
    # The namespace's init is the outer process's child; once it is dead the kernel has killed and
    # reaped everything else in the namespace. Pin it with a pidfd before killing the outer process.
    inits = [fd for fd in (_pidfd(p) for p in _children(proc.pid)) if fd is not None]
    _killpg(proc.pid)
    for fd in inits:
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        pass
    for fd in inits:
        _wait_fd(fd, 5.0)
        os.close(fd)


def _wait_fd(fd: int, timeout: float) -> None:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        sel.select(timeout)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return [p for p, ppid in _ppids().items() if ppid == pid]


def _ppids() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                out[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return out


def _sweep(marker: str) -> None:
    """rlimits mode: kill anything still carrying this run's environment marker (e.g. a daemon whose
    launcher was killed under it). Best effort: a process can rewrite its environment."""
    needle = f"{_ENV_MARKER}={marker}".encode()
    for _ in range(20):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read():
                        found = True
                        os.kill(int(name), signal.SIGKILL)
            except OSError:
                pass
        if not found:
            return
        time.sleep(0.02)


def _rmtree(path: str) -> None:
    if os.geteuid() != 0:
        # The program may have left directories without write permission for us.
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                p = os.path.join(root, d)
                if not os.path.islink(p):
                    try:
                        os.chmod(p, 0o700)
                    except OSError:
                        pass
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- throwaway uids (root only)


def _acquire_uid() -> int:
    global _uids_made
    with _uid_lock:
        if _uids_free:
            return _uids_free.pop()
        _uids_made += 1
        return _uid_base + _uids_made


def _release_uid(uid: int) -> None:
    with _uid_lock:
        _uids_free.append(uid)


def _userns_for(uid: int) -> int:
    """A user namespace mapping ns uid 65534 to `uid` (and ns uid 1 to host root), kept for reuse: every
    process of a run is dead before its uid goes back to the pool."""
    with _uid_lock:
        if uid in _userns_fds:
            return _userns_fds[uid]
    helper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _USERNS_HELPER],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={})
    try:
        if helper.stdout.read(1) != b"k":
            raise OSError("unshare(CLONE_NEWUSER) failed")
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{helper.pid}/{name}", "w") as f:
                f.write(f"1 0 1\n{SANDBOX_UID} {uid} 1\n")
        fd = os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.stdin.close()
        helper.stdout.close()
        helper.wait()
    with _uid_lock:
        _userns_fds[uid] = fd
    return fd


def _kill_uid(uid: int) -> None:
    """Kill every process whose real, effective or saved uid is `uid` (a run's throwaway uid): setsid daemons
    included, whatever namespace they are in."""
    needle = str(uid)
    for _ in range(50):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/status") as f:
                    uids = next((line.split()[1:4] for line in f if line.startswith("Uid:")), [])
            except OSError:
                continue
            if needle in uids:
                found = True
                try:
                    os.kill(int(name), signal.SIGKILL)
                except OSError:
                    pass
        if not found:
            return
        time.sleep(0.01)


# ---------------------------------------------------------------- unshare-mode launcher

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWPID, _CLONE_NEWNET = (
    0x00020000, 0x04000000, 0x08000000, 0x20000000, 0x40000000)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_MOVE, _MS_REC = 1024, 2048, 4096, 8192, 16384
_MS_PRIVATE, _MS_RELATIME, _MS_STRICTATIME = 1 << 18, 1 << 21, 1 << 24
_MNT_DETACH = 2
_PR_SET_NO_NEW_PRIVS = 38
# statvfs f_flag bit -> mount flag to keep when re-mounting read-only (a user namespace may not drop them)
_KEEP = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC),
         (os.ST_NODIRATIME, _MS_NODIRATIME))


class _SetupError(Exception):
    pass


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()   # noqa: E731
    if _libc().mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise _SetupError(f"mount {src or fstype} on {target} (flags {flags:#x}): {os.strerror(err)}")


def _remount_readonly(target: str, extra: int = 0) -> None:
    st = os.statvfs(target)
    flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY | extra
    for bit, keep in _KEEP:
        if st.f_flag & bit:
            flags |= keep
    flags |= (_MS_NOATIME if st.f_flag & os.ST_NOATIME else _MS_RELATIME if st.f_flag & 4096 else _MS_STRICTATIME)
    _mount(None, target, None, flags)


def _mount_points() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            raw = line.split()[4]
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw))
    return sorted(set(points), key=lambda p: (p.count("/"), p))


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _tmpfs(target: str, *, size: int, mode: str, uid: int = 0, flags: int = _MS_NOSUID | _MS_NODEV) -> None:
    _mount("tmpfs", target, "tmpfs", flags, f"size={size},mode={mode},uid={uid},gid={uid}")


def hide_and_rebind(hidden: list[str], rebind: list[str], stage: str, covering=lambda: None) -> None:
    """Cover each `hidden` directory with an empty read-only tmpfs and bind each `rebind` path (which may lie
    under one) back on top, read-only. `stage` is a scratch directory; the binds pass through a tmpfs there
    because once a directory is covered its contents cannot be named any more; `covering()` mounts whatever
    else covers a rebind path (the private /tmp). Needs CAP_SYS_ADMIN in a private mount namespace."""
    _tmpfs(stage, size=1 << 20, mode="0700")
    for i, path in enumerate(rebind):
        os.mkdir(f"{stage}/{i}")
        _mount(path, f"{stage}/{i}", None, _MS_BIND | _MS_REC)
    covering()
    for path in hidden:
        os.makedirs(path, exist_ok=True)    # a home under /tmp is gone once the private /tmp covers it
        _tmpfs(path, size=1 << 20, mode="0755")
    for i, path in enumerate(rebind):
        os.makedirs(path, exist_ok=True)
        _mount(f"{stage}/{i}", path, None, _MS_MOVE)
        _remount_readonly(path)
    for path in hidden:
        _mount(None, path, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    if _libc().umount2(stage.encode(), _MNT_DETACH) != 0:
        raise _SetupError(f"umount {stage}: {os.strerror(ctypes.get_errno())}")


def _ns_launch(config_json: str) -> int:
    """unshare mode, the launcher: enter new namespaces, fork the namespace's init, pass on its exit status."""
    cfg = json.loads(config_json)
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    with open(cfg["prog"], "rb") as f:      # read now: the host working directory is hidden below
        source = f.read()
    user = os.geteuid() != 0
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
    if libc.unshare(flags | (_CLONE_NEWUSER if user else 0)) != 0:
        os.write(2, f"sandbox: unshare: {os.strerror(ctypes.get_errno())}\n".encode())
        return 125
    if user:   # become root of the new user namespace (mapped to the user) to build the mounts
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {outer_uid} 1")
        _write("/proc/self/gid_map", f"0 {outer_gid} 1")
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            code = _ns_init(cfg, source, user)
        except BaseException as e:  # noqa: BLE001 - report and leave: the sandbox is not set up
            os.write(2, f"sandbox setup: {e}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _ns_init(cfg: dict, source: bytes, user: bool) -> int:
    """pid 1 of the new pid namespace: build the filesystem view, start the program as the sandbox uid, reap
    orphans, and exit with the program's status - which kills everything left in the namespace."""
    libc = _libc()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    size, workdir = cfg["tmpfs_bytes"], cfg["workdir"]
    uid = cfg["uid"] if cfg["uid"] is not None else 0   # owner of the writable places, as seen from here
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for point in _mount_points():     # the whole host filesystem read-only
        if point == "/proc" or point.startswith("/proc/"):
            continue                  # replaced by a fresh proc below
        try:
            _remount_readonly(point)
        except FileNotFoundError:
            continue                  # under a directory an earlier mount covered
        except (OSError, _SetupError) as e:
            if os.path.exists(point):
                raise _SetupError(f"cannot make {point} read-only: {e}") from None
    stage = "/dev/shm"                # scratch for the binds; replaced by the program's /dev/shm afterwards
    hide_and_rebind(cfg["hidden"], cfg["rebind"], stage, lambda: _tmpfs("/tmp", size=size, mode="1777"))
    _tmpfs("/dev/shm", size=size, mode="1777")
    os.makedirs(workdir, exist_ok=True)
    _tmpfs(workdir, size=size, mode="0700", uid=uid)
    prog = os.path.join(workdir, "prog.py")
    with open(prog, "wb") as f:
        f.write(source)
    os.chmod(prog, 0o644)
    try:
        _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    except _SetupError:               # a proc mount can be refused in a container: hide the host's instead
        _tmpfs("/proc", size=4096, mode="0555", flags=_MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_RDONLY)
    child = os.fork()
    if child == 0:
        try:
            _drop_privileges(cfg, user)
            os.chdir(workdir)
            os.execv(cfg["argv"][0], cfg["argv"])
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"sandbox: {e}\n".encode())
        finally:
            os._exit(126)
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 125
        if done == child:
            code = os.waitstatus_to_exitcode(status)
            return 128 - code if code < 0 else code


def _drop_privileges(cfg: dict, user: bool) -> None:
    libc = _libc()
    if user:
        # A nested user namespace whose only uid (65534) is our root here: the mounts above are locked, and
        # the program holds no capability over them (execve as a non-zero uid clears them).
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS) != 0:
            raise _SetupError(f"nested unshare: {os.strerror(ctypes.get_errno())}")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{SANDBOX_UID} 0 1")
        _write("/proc/self/gid_map", f"{SANDBOX_UID} 0 1")
    else:
        uid = cfg["uid"]
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _SetupError("prctl(PR_SET_NO_NEW_PRIVS) failed")


# ---------------------------------------------------------------- rlimits-mode launcher


class _Stop(Exception):
    pass


def _launch(argv: list[str]) -> int:
    """Entry point of the launcher process (rlimits mode): start the program and, when it ends or we are
    told to stop, kill every process it left behind. Being a child subreaper, orphans -- including
    double-forked setsid daemons -- are re-parented to us, so walking our descendants finds them all."""
    uid = int(argv[0])
    cmd = argv[argv.index("--") + 1:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def stop(signum, frame):
        raise _Stop

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            if uid >= 0:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
            os.execv(cmd[0], cmd)
        except BaseException as e:
            os.write(2, f"sandbox launcher: {e}\n".encode())
        finally:
            os._exit(127)
    code = 128 + signal.SIGKILL
    try:
        while True:
            done, status = os.waitpid(-1, 0)
            if done == pid:
                code = os.waitstatus_to_exitcode(status)
                code = 128 - code if code < 0 else code
                break
    except (_Stop, ChildProcessError):
        pass
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _kill_descendants()
    return code


def _kill_descendants() -> None:
    me = os.getpid()
    for _ in range(400):
        kids: dict[int, list[int]] = {}
        for p, pp in _ppids().items():
            kids.setdefault(pp, []).append(p)
        todo, found = [me], []
        while todo:
            for c in kids.get(todo.pop(), []):
                found.append(c)
                todo.append(c)
        if not found:
            return
        for p in found:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        # Reap without blocking: a child forked after the scan is only found (and killed) next round.
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.005)


if __name__ == "__main__" and sys.argv[1:2] == ["--launch"]:
    sys.exit(_launch(sys.argv[2:]))
if __name__ == "__main__" and sys.argv[1:2] == ["--ns-launch"]:
    sys.exit(_ns_launch(sys.argv[2]))
