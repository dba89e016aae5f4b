"""Run an untrusted Python program in a throwaway sandbox and report what happened.

Isolation, strongest first, picked once per process by actually running a trivial program:

* ``bwrap``   bubblewrap: new user/pid/net/ipc/uts namespaces, the host filesystem read-only, a private
              /tmp, the host home hidden, only a fresh working directory writable.
* ``unshare`` util-linux unshare: new user/pid/net/ipc/uts/mount namespaces, but the filesystem is the
              host's (writable wherever the sandbox uid may write).
* ``rlimits`` no namespaces: rlimits, a subreaper launcher that kills every descendant, and a sweep for
              escapees. It cannot stop network access or file writes; a loud warning is logged.

In every mode the program gets rlimits (address space, CPU time, file size, processes), a clean
environment, a fresh working directory (deleted afterwards), a wall-clock limit after which the whole
process tree is killed, and stdout/stderr read through a size cap.

RLIMIT_NPROC is not enforced for processes whose real uid is host root, so when we are root the program
runs as a throwaway uid instead. With bwrap that needs a user namespace we build ourselves (ns uid 65534
-> throwaway uid, ns uid 1 -> host root so bwrap can still resolve root-only paths while setting up), and
root-only parents of the interpreter (pyenv under /root) are hidden behind a tmpfs with the interpreter
bind-mounted back. Without bwrap that is only possible when the interpreter is readable by other users.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
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

_detect_lock = threading.Lock()
_detected: _Mode | None = None
_warned: set[str] = set()

_uid_lock = threading.Lock()
_uid_base = 1_500_000_000 + (os.getpid() % 1_000_000) * 64
_uids_free: list[int] = []
_uids_made = 0
_userns_fds: dict[int, int] = {}


# ---------------------------------------------------------------- public API


def isolation_mode() -> str:
    """The isolation run_python uses on this machine: "bwrap", "unshare" or "rlimits"."""
    return _mode().name


def run_python(
    source: str,
    *,
    timeout: float = 10.0,
    memory_mb: int = 1024,
    cpu_seconds: int | None = None,
    max_output_bytes: int = 1_000_000,
    max_file_bytes: int = 10_000_000,
    max_processes: int = 64,
) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; never raises for anything the program does."""
    mode = _mode()
    _warn_if_weak(mode)
    return _execute(
        source,
        mode,
        timeout=timeout,
        memory_mb=memory_mb,
        cpu_seconds=cpu_seconds if cpu_seconds is not None else int(timeout) + 1,
        max_output_bytes=max_output_bytes,
        max_file_bytes=max_file_bytes,
        max_processes=max_processes,
    )


# ---------------------------------------------------------------- detection


def _mode() -> _Mode:
    global _detected
    with _detect_lock:
        if _detected is None:
            _detected = _detect()
        return _detected


def _detect() -> _Mode:
    for name in ("bwrap", "unshare", "rlimits"):
        mode = _best(name)
        if mode is not None:
            log.info("sandbox isolation: %s%s", mode.name, " (throwaway uid)" if mode.drop_uid else "")
            return mode
    # Even the trivial program failed; keep the weakest mode so that failures show up as verdicts.
    return _Mode("rlimits", drop_uid=False)


def _best(name: str) -> _Mode | None:
    """The strongest working variant of one isolation kind, or None. A variant works if it runs print('ok')."""
    if name == "bwrap" and not shutil.which("bwrap"):
        return None
    if name == "unshare" and not shutil.which("unshare"):
        return None
    variants = [True, False] if os.geteuid() == 0 else [False]
    for drop_uid in variants:
        mode = _Mode(name, drop_uid)
        try:
            res = _execute("print('ok')", mode, timeout=30.0, memory_mb=1024, cpu_seconds=30,
                           max_output_bytes=10_000, max_file_bytes=1_000_000, max_processes=64)
        except OSError as e:  # e.g. the userns helper could not write the uid map
            log.debug("sandbox probe %s failed: %s", mode, e)
            continue
        if res.returncode == 0 and res.stdout.strip() == "ok":
            return mode
        log.debug("sandbox probe %s failed: rc=%s %s", mode, res.returncode, res.stderr.strip()[-500:])
    return None


def _warn_if_weak(mode: _Mode) -> None:
    problems = []
    if mode.name == "rlimits":
        problems.append("no namespaces (bwrap and unshare unusable here): the program can use the network "
                        "and write files wherever its user may, and an escaped daemon is only best-effort killed")
    elif mode.name == "unshare":
        problems.append("no filesystem isolation (bwrap unusable here): the program can write files wherever "
                        "its user may")
    if os.geteuid() == 0 and not mode.drop_uid:
        problems.append("it runs with host uid 0, so the process-count limit does not apply"
                        + ("" if mode.name == "bwrap" else " and it can write root-owned files"))
    key = f"{mode.name}/{mode.drop_uid}"
    if problems and key not in _warned:
        _warned.add(key)
        log.warning("!!! WEAK SANDBOX (isolation=%s) for untrusted code: %s. Install bubblewrap and allow "
                    "user namespaces for real isolation. !!!", mode.name, "; ".join(problems))


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
        if uid is not None:
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
            _release_uid(uid)


def _status(rc: int | None) -> int | None:
    return 128 - rc if rc is not None and rc < 0 else rc


def _command(mode: _Mode, inner: list[str], workdir: str, uid: int | None) -> tuple[list[str], dict]:
    as_uid = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
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
        cmd = ["unshare", f"--map-user={SANDBOX_UID}", f"--map-group={SANDBOX_UID}", "--pid", "--net", "--ipc",
               "--uts", "--mount", "--mount-proc", "--fork", "--kill-child", "--", *inner]
        return cmd, as_uid
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
    hidden = {os.path.realpath(os.path.expanduser("~"))}
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
