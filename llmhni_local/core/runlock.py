"""One process per run folder: ``RUN/.lock``.

Every command that writes a run folder holds :func:`run_lock` on it for as long as it runs; a
second one is refused at once with one line naming the holder (pid, command, host, start).

How it holds: ``RUN/.lock`` is opened and locked with ``flock`` (exclusive, non-blocking), and
the holder's pid, command line, host and start time are written into it as JSON. The kernel
drops an ``flock`` when its process ends, however it ends (SIGKILL included), so a lock left
by a dead process is simply free: the next command takes it over and says so on stderr. The
file is removed on release (normal exit, exception, Ctrl-C). A command that calls another
locked function of the same folder in the same process does not block itself: the lock is
re-entrant per process.

On a filesystem without ``flock`` (some cluster filesystems), the lock falls back to the
recorded pid: a live pid on this host holds the folder, a dead one is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from llmhni_local.core.errors import UserError

LOCK_NAME = ".lock"

_held: dict[Path, list] = {}  # resolved run folder -> [fd, depth, folder created by us]
_guard = threading.Lock()


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``run_dir/.lock`` while the block runs; yields the lock file's path.

    Raises :class:`~llmhni_local.core.errors.UserError` (one line naming the holder's pid and
    command) when another live process holds the folder.
    """
    folder = Path(run_dir).resolve()  # two spellings of one folder share one lock
    with _guard:
        held = _held.get(folder)
        if held is not None:
            held[1] += 1
        else:
            created = not folder.exists()
            _held[folder] = [_acquire(folder, command), 1, created]
    try:
        yield folder / LOCK_NAME
    finally:
        with _guard:
            held = _held[folder]
            held[1] -= 1
            if held[1] == 0:
                del _held[folder]
                _release(folder / LOCK_NAME, held[0])
                if held[2]:  # a command that failed early leaves no empty folder behind
                    with contextlib.suppress(OSError):
                        folder.rmdir()


def lock_holder(run_dir: str | os.PathLike) -> dict | None:
    """What ``RUN/.lock`` says about its holder (None: no lock file, or an unreadable one)."""
    return _read_holder(Path(run_dir) / LOCK_NAME)


# ---------------------------------------------------------------------------- internals
def _acquire(folder: Path, command: str) -> int:
    path = folder / LOCK_NAME
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(50):  # the holder may remove the file between our open and our flock
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            flocked = _flock(fd)
        except BaseException:
            os.close(fd)
            raise
        if flocked is False:
            holder = _read_holder(path, wait=True)
            os.close(fd)
            raise UserError(_busy(folder, holder))
        if not _same_file(fd, path):
            os.close(fd)  # we locked a file its holder has just removed: try the new one
            continue
        previous = _parse(_read_fd(fd))
        if flocked is None and _alive_elsewhere(previous):  # no flock here: trust the pid
            os.close(fd)
            raise UserError(_busy(folder, previous))
        if previous and previous.get("pid") != os.getpid():
            print(f"note: {folder}: taking over the lock of pid {previous.get('pid')} "
                  f"({previous.get('command', '?')}, started {previous.get('started', '?')}), "
                  "which no longer runs", file=sys.stderr)
        _write_holder(fd, command)
        return fd
    raise UserError(f"{path}: could not take the run folder's lock (it kept being replaced)")


def _flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this filesystem has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return None
        raise


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _write_holder(fd: int, command: str) -> None:
    info = {"pid": os.getpid(), "command": command,
            "argv": shlex.join(sys.argv).replace("\n", " "), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    data = (json.dumps(info) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    try:
        os.fsync(fd)  # so a reader on another host of a shared filesystem sees the holder
    except OSError:
        pass


def _release(path: Path, fd: int) -> None:
    try:
        if _same_file(fd, path):  # remove it while still holding it: no one can be mid-take
            path.unlink()
    except OSError:
        pass  # a lock file left behind is free once we close, and is taken over
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    return os.pread(fd, 1 << 16, 0)


def _parse(data: bytes) -> dict | None:
    try:
        info = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _read_holder(path: Path, *, wait: bool = False) -> dict | None:
    # The holder writes its details just after it locks: a reader can come in between.
    for _ in range(20 if wait else 1):
        try:
            info = _parse(path.read_bytes())
        except OSError:
            info = None
        if info is not None:
            return info
        if wait:
            time.sleep(0.025)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _alive_elsewhere(info: dict | None) -> bool:
    """A holder recorded in the file that still runs (pid check; only without flock)."""
    if not info or not isinstance(info.get("pid"), int) or info["pid"] == os.getpid():
        return False
    if info.get("host") != socket.gethostname():
        return True  # cannot check another host's pids: assume it runs
    return _pid_alive(info["pid"])


def _busy(folder: Path, holder: dict | None) -> str:
    if holder is None:
        return (f"{folder}: in use by another process (its details are unreadable); wait for "
                f"it to end, or stop it")
    pid = holder.get("pid")
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    gone = ""
    if not where and isinstance(pid, int) and not _pid_alive(pid):
        gone = " (that pid has ended, but a process it started still holds the lock)"
    return (f"{folder}: in use by pid {pid}{where} ({holder.get('command', '?')}: "
            f"{holder.get('argv', '?')}, started {holder.get('started', '?')}){gone}; wait for "
            f"it to end, or stop it")
