"""Files and directories written atomically, and directories checked against their digests.

A file is written whole under a temporary name beside it, fsynced and renamed over the old
one, so a reader sees the old file or the new, never part of one. A directory (a checkpoint,
a data set's prepared ids) is filled under a temporary name in the same parent, every file's
SHA-256 recorded in its meta.json's "files", and the record's own SHA-256 in its "digest",
everything fsynced, then renamed into place; it is used only if the record and every file
still match their digests (verify).
"""
import contextlib
import functools
import hashlib
import json
import os
import shutil

META = "meta.json"  # a directory's record: its writer's fields, "files": {name: SHA-256}, and its own "digest"
DIGEST = "digest"  # the SHA-256 of the record's other fields (record_digest): the record vouches for itself
TEMP_PREFIX = ".saving-"  # a directory being written; one left behind was interrupted
MISSING, NOT_READABLE, NOT_A_RECORD, CHANGED = "missing", "not readable", "not a record", "changed"
RECORD_CHANGED, NO_DIGEST = "record changed", "no digest"  # meta.json itself: edited or damaged; or too old


def file_digest(path):
    """The SHA-256 of a file's contents, in hex (read once per process while the file is unchanged)."""
    st = os.stat(path)
    return _file_digest(os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=64)
def _file_digest(path, size, mtime_ns, inode):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_digest(record):
    """The SHA-256 of a record's fields but its digest, over one canonical JSON form: what a
    reader parses back from meta.json gives the same digest, however it was laid out."""
    fields = {key: value for key, value in record.items() if key != DIGEST}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path, mode="wb"):
    """An open file ("wb", or "w": UTF-8 text) that becomes path when the block ends: written
    under a temporary name beside it, fsynced, renamed over path, and the directory fsynced.
    If the block raises, the temporary file is removed and path is as it was. An OSError
    names path, not the temporary name."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}  # newline="": csv writes its own
    try:
        with open(tmp, mode, **text) as f:  # open(): the umask's modes, so other pods' users can read it
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except OSError as e:
        _name_as(e, tmp, os.fspath(path))
        raise
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_file(path, contents):
    """Replace path with contents (bytes, or str written as UTF-8), atomically (atomic_file)."""
    with atomic_file(path) as f:
        f.write(contents.encode() if isinstance(contents, str) else contents)


def write_dir(path, fill, record, replace):
    """Write the directory path atomically: fill(tmp) writes its files into a new directory
    beside it; each file's digest goes into record's "files", and record into meta.json; every
    file and the directory are fsynced, then it is renamed to path and the parent fsynced.
    An existing path is replaced (replace=True), or else kept if it verifies (another process,
    on a host sharing the directory, wrote the same first). On an OSError the new directory is
    removed and the error re-raised, naming the file as path would hold it."""
    parent, name = os.path.split(path)
    tmp = os.path.join(parent, f"{TEMP_PREFIX}{name}-{os.getpid()}")
    try:
        os.makedirs(tmp)
        fill(tmp)
        files = sorted(os.listdir(tmp))
        record = {**record, "files": {file: file_digest(os.path.join(tmp, file)) for file in files}}
        record[DIGEST] = record_digest(record)
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(record, f, indent=2)
        for file in files + [META]:  # on disk before the directory has its name
            _fsync_file(os.path.join(tmp, file))
        fsync_dir(tmp)
        if replace and os.path.exists(path):
            shutil.rmtree(path)
        try:
            os.rename(tmp, path)
        except OSError:  # another process named its own copy first
            if replace or _damage(path) is not None:
                raise
        fsync_dir(parent or ".")
    except OSError as e:
        _name_as(e, tmp, path)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_file(path):
    with naming_errors(path), open(path, "rb") as f:  # a full disk can show first here
        os.fsync(f.fileno())


@contextlib.contextmanager
def naming_errors(path):
    """An OSError in the block names path where the OS named no file (a write() to a full disk)."""
    try:
        yield
    except OSError as e:
        e.filename = e.filename or path
        raise


def _name_as(error, tmp, path):
    """Name error's file as under path rather than under the temporary name tmp."""
    name = os.fspath(error.filename) if isinstance(error.filename, (str, os.PathLike)) else None
    if name is not None and (name == tmp or name.startswith(tmp + os.sep)):
        error.filename = path + name[len(tmp):]


def verify(path, wording):
    """-> None if meta.json is there and every file it records matches its digest, else why
    not, in the caller's wording: {MISSING, NOT_READABLE, NOT_A_RECORD (meta.json's contents),
    RECORD_CHANGED (meta.json's own digest differs), NO_DIGEST (meta.json has none: written
    before records had one), CHANGED (a file's digest differs): a str.format template of the
    file's name and the error seen}."""
    damage = _damage(path)
    if damage is None:
        return None
    problem, file, error = damage
    return wording[problem].format(file=file, error=error)


def _damage(path):
    """-> None, or (problem, file, error)."""
    try:
        with open(os.path.join(path, META), "rb") as f:
            record = json.loads(f.read())
        if DIGEST not in record:
            return NO_DIGEST, META, None
        if record[DIGEST] != record_digest(record):
            return RECORD_CHANGED, META, None
        for file, digest in record["files"].items():
            if file_digest(os.path.join(path, file)) != digest:
                return CHANGED, file, None
    except FileNotFoundError as e:
        return MISSING, os.path.basename(e.filename), e
    except OSError as e:
        return NOT_READABLE, os.path.basename(e.filename or ""), e
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        return NOT_A_RECORD, META, e
    return None


def read_record(path):
    """A directory's meta.json, as written (verify first)."""
    with open(os.path.join(path, META)) as f:
        return json.load(f)


def remove_interrupted(parent):
    """Directories write_dir left in parent when it was killed: never a record, always
    removable. -> their paths."""
    try:
        entries = os.listdir(parent)
    except (FileNotFoundError, NotADirectoryError):
        return []
    stale = [os.path.join(parent, entry) for entry in entries if entry.startswith(TEMP_PREFIX)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale
