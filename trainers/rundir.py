"""Run directories and output paths: checked before anything is written, and locked while a run uses them.

* :func:`check_run_dir` refuses an empty path, a path that is a file (or lies
  under one) and a directory that cannot be written, without creating anything.
* :class:`RunDirLock` makes a run directory exclusive: it holds an advisory
  ``flock`` on ``RUN_DIR/.eqpm.lock``, a small JSON file naming the holder's
  PID, host, start time and command line.  A second run on a busy directory
  gets :class:`RunDirBusy` naming the holder.  The kernel drops the ``flock``
  when the holder exits for any reason (SIGKILL included), so a lock file left
  behind by a dead run is *stale* by construction: the next run takes it over
  and logs whose it was.  Where ``flock`` is unavailable (no ``fcntl``, or a
  file system that refuses it), the lock falls back to the PID and host in the
  file: a live PID on this host, or any PID on another host, holds it; a PID
  that no longer runs on this host is stale.  Delete the lock file by hand
  only when you know its holder is gone.
* :func:`check_output_file` / :func:`check_output_dir` check where a command
  will write its results (``--out``, ``--out-dir``, ``--figures-dir``) before it
  starts the work.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger("trainers")

LOCK_NAME = ".eqpm.lock"


class RunDirError(ValueError):
    """A run directory or output path that cannot be used (the CLI prints it as one line, exit status 2)."""


class RunDirBusy(RunDirError):
    """Another live run holds the run directory's lock."""


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and not q.is_symlink() and q != q.parent:
        q = q.parent
    return q


def _check_writable_dir(p: Path, what: str, path: Path) -> None:
    """``p`` is ``path`` or the nearest existing ancestor of it; refuse files and unwritable directories."""
    if not p.is_dir():
        if p == path:
            raise RunDirError(f"{what} {str(path)!r} is a file; accepted: a directory (created if missing)")
        raise RunDirError(f"{what} {str(path)!r} cannot be created: {str(p)!r} is a file, not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} {str(path)!r} is not writable: no write permission on {str(p)!r} "
                          f"(or a read-only file system); accepted: a directory you can write")


def check_run_dir(run_dir: str | os.PathLike[str], what: str = "run directory") -> Path:
    """The run directory as a :class:`~pathlib.Path`, or :class:`RunDirError`; creates nothing.

    Refused: an empty path (``""`` would otherwise mean the current
    directory and overwrite its files), a file, a path under a file, and a
    directory (or the nearest existing parent of a missing one) that this user
    cannot write.
    """
    if isinstance(run_dir, bytes) or not isinstance(run_dir, (str, os.PathLike)):
        raise RunDirError(f"{what} {run_dir!r} is not a path; accepted: a directory path")
    raw = os.fspath(run_dir)
    if not raw.strip():
        raise RunDirError(f"{what} is empty; accepted: a directory path (use '.' to mean the current directory)")
    path = Path(raw)
    _check_writable_dir(_nearest_existing(path), what, path)
    return path


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """Like :func:`check_run_dir` for a command's output directory (``flag`` names it in messages)."""
    return check_run_dir(path, what=flag)


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """A file the command will write: not a directory, in an existing writable directory."""
    raw = os.fspath(path)
    if not raw.strip():
        raise RunDirError(f"{flag} is empty; accepted: a file path")
    p = Path(raw)
    if p.is_dir():
        raise RunDirError(f"{flag} {raw!r} is a directory; accepted: a file path such as {str(p / 'table.csv')!r}")
    parent = p.parent
    if not parent.exists():
        raise RunDirError(f"{flag} {raw!r}: directory {str(parent)!r} does not exist; create it first")
    _check_writable_dir(parent, f"{flag} directory", parent)
    if p.exists() and not os.access(p, os.W_OK):
        raise RunDirError(f"{flag} {raw!r} exists and is not writable")
    return p


# --------------------------------------------------------------------------- the lock
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _describe(holder: dict) -> str:
    since = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')} (since {when})"


class RunDirLock:
    """Exclusive lock on a run directory (see the module docstring); a context manager.

    ``acquire`` creates the directory if needed (call :func:`check_run_dir`
    first for a clear message about unusable paths).
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _read_holder(self) -> dict:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _busy(self, holder: dict) -> RunDirBusy:
        return RunDirBusy(f"run directory {str(self.run_dir)!r} is in use by {_describe(holder)} "
                          f"(lock file {str(self.path)!r}); wait for that run to finish or choose another "
                          f"run directory")

    def acquire(self) -> RunDirLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this RunDirLock")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"run directory {str(self.run_dir)!r} cannot be created ({exc.strerror or exc})") \
                from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv else []}
        for _ in range(100):  # retries only when a releasing holder unlinked the file under us
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if not self._flock(fd):
                    holder = self._read_holder()
                    raise self._busy(holder)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # we locked a file its holder had just removed: lock the new one
                    os.close(fd)
                    continue
                previous = self._read_holder()
                if previous.get("pid") is not None:
                    log.warning("run directory %s: taking over the stale lock of %s (that run is gone)",
                                self.run_dir, _describe(previous))
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps(me).encode())
            except BaseException:
                if self._fd != fd:
                    os.close(fd)
                raise
            self._fd = fd
            return self
        raise RunDirError(f"{self.path}: could not take the lock (the file keeps being replaced)")

    def _flock(self, fd: int) -> bool:
        """True when this process now holds the lock on ``fd``; False when a live holder has it."""
        try:
            import fcntl
        except ImportError:  # not POSIX: PID and host in the file decide
            return self._pid_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return self._pid_lock()
            raise

    def _pid_lock(self) -> bool:
        holder = self._read_holder()
        pid, host = holder.get("pid"), holder.get("host")
        if not isinstance(pid, int) or pid == os.getpid():
            return True
        if host != socket.gethostname():
            return False  # cannot tell whether a process on another host still runs
        return not _pid_alive(pid)

    def release(self) -> None:
        """Remove the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()  # while still locked: nobody can take the old file in between
        except FileNotFoundError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def last_epochs(run_dir: str | os.PathLike[str]) -> tuple[int | None, int | None]:
    """``(last epoch in metrics.csv, epoch of checkpoint.pt)`` of a run directory; ``None`` where absent.

    Used to tell an interrupted user where the run stopped.
    """
    out = Path(run_dir)
    logged = None
    try:
        rows = (out / "metrics.csv").read_text().strip().splitlines()
        if len(rows) > 1:
            logged = int(rows[-1].split(",", 1)[0])
    except (OSError, ValueError):
        pass
    ckpt = None
    try:
        import torch

        ckpt = int(torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")["epoch"])
    except Exception:  # noqa: BLE001 - absent or unreadable: the message then says nothing about it
        pass
    return logged, ckpt
