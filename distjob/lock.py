"""One run per output dir: an advisory lock that rank 0 holds on OUTPUT_DIR/.distjob-lock while
the run lasts.

The lock is a POSIX record lock (fcntl), which the kernel drops when its process ends, however
it ends: a lock file left by a dead run is locked again at once, and its contents (host, pid,
since when) only name the holder in the message a second run prints. On NFS (v3 with lockd, v4
natively) and CephFS the lock is the server's, so it holds across hosts sharing a volume; see
docs/failures.md for what is and is not guaranteed there.
"""
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time

LOCK_FILE = ".distjob-lock"
_HELD = {}  # lock file path -> OutputDirLock: POSIX locks never conflict within one process, so this does


class InUse(Exception):
    """The output dir is locked by another run; holder is its record (a dict, possibly empty)."""

    def __init__(self, holder):
        super().__init__(describe(holder))
        self.holder = holder


def describe(holder):
    """A holder's record -> "host H, pid P, since T" (what the lock file says of it)."""
    if not holder:
        return "its lock file names no holder yet"
    try:
        since = f"{datetime.datetime.fromtimestamp(holder['since'], datetime.timezone.utc):%Y-%m-%d %H:%M:%S} UTC"
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        since = "an unknown time"
    return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, since {since}"


class OutputDirLock:
    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.abspath(os.path.join(directory, LOCK_FILE))
        self.fd, self.made = None, []

    def acquire(self):
        """Lock the directory, making it if need be -> the record of a holder that ended without
        releasing it, or None. Raises InUse, or OSError (the directory cannot be made, or its
        file system has no locks: ENOLCK, EOPNOTSUPP)."""
        if self.path in _HELD:
            raise InUse(_HELD[self.path].record())
        self.made = _make_dirs(self.directory)
        while self.fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not _try_lock(fd):
                holder = _read(fd)
                os.close(fd)
                raise InUse(holder)
            if _same_file(fd, self.path):
                self.fd = fd
            else:  # its holder removed the file as it released it: lock the file now there
                os.close(fd)
        previous = _read(self.fd)
        _write(self.fd, {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                         "command": " ".join(sys.argv)})
        _HELD[self.path] = self
        return previous or None

    def record(self):
        return _read(self.fd) if self.fd is not None else {}

    def release(self):
        """Remove the lock file, then drop the lock (so a run waiting on the old file locks the
        new one), and the directories acquire made if nothing else went into them."""
        if self.fd is None:
            return
        _HELD.pop(self.path, None)
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)  # closing drops the POSIX lock
        self.fd = None
        for path in self.made:  # innermost first
            try:
                os.rmdir(path)
            except OSError:
                break


def _make_dirs(directory):
    """os.makedirs(directory) -> the directories it made, innermost first."""
    made, path = [], os.path.abspath(directory)
    while not os.path.lexists(path):
        made.append(path)
        path = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    return made


def _try_lock(fd):
    """-> whether fd's file is now locked by this process (False: another process holds it)."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        os.close(fd)
        raise


def _same_file(fd, path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)


def _read(fd):
    """The record in the lock file, or {} if there is none (empty, or being written)."""
    try:
        record = json.loads(os.pread(fd, 1 << 16, 0).decode())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write(fd, record):
    data = json.dumps(record).encode() + b"\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
