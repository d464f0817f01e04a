"""Writing output files safely, and naming a full disk.

Every file hcscan writes for people (reports, exports, the demo's config) goes through `write_private`: a fresh
temporary file is created exclusively beside the target (never through a symlink, never reusing a name someone
else chose), written, flushed to disk and then renamed over the target. A symlink planted at the target is
replaced by the regular file — what it pointed to is never opened. On any error (a full disk included) the
temporary file is removed and the previous target is left as it was.

`disk_full_reason` recognises "no space left" wherever it comes from (a file write, SQLite, PostgreSQL), so the
CLI can say it in one line and a scan can end its run `interrupted` with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

DEFAULT_FILE_MODE = 0o600
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_SQLITE_IOERR_SHMSIZE = 10 | (19 << 8)  # the WAL index (-shm) could not be extended (ENOSPC on tmpfs)
_PG_DISK_FULL = "53100"  # PostgreSQL SQLSTATE disk_full


class OutputError(Exception):
    """An output file could not be written (the message names the file and why, e.g. "disk full: …")."""


class DiskFull(Exception):
    """The disk (or the database server's disk) is full; the message says where and what was lost."""


def dir_mode(file_mode: int) -> int:
    """The mode of a directory created for files of `file_mode`: whoever may read the files may enter it."""
    mode = file_mode & 0o777
    for read, execute in ((0o400, 0o100), (0o040, 0o010), (0o004, 0o001)):
        if mode & read:
            mode |= execute
    return mode | 0o700


def parse_file_mode(text: str) -> int:
    """A file mode as written in config ("0600", "0640", "644"): read and write for the owner, nothing executable,
    nobody else may write. Raises ValueError with what is wrong."""
    digits = text.strip().removeprefix("0o")
    if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
        raise ValueError(f'{text!r} is not an octal mode such as "0600" or "0640"')
    mode = int(digits, 8)
    if mode & ~0o777:
        raise ValueError(f"mode {text!r}: setuid, setgid and sticky bits are not allowed")
    if mode & 0o600 != 0o600:
        raise ValueError(f"mode {text!r}: the owner must be able to read and write (0600 at least)")
    if mode & 0o111:
        raise ValueError(f"mode {text!r}: report files are never executable")
    if mode & 0o022:
        raise ValueError(f"mode {text!r}: only the owner may write (use 0600, 0640 or 0644)")
    return mode


def make_dirs(directory: Path, mode: int = 0o700) -> None:
    """Create `directory` and any missing parents with exactly `mode` (not what the umask leaves of it); directories
    that exist already are left as they are."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, mode)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, as it is
        os.chmod(created, mode)


def write_private(path: Path, data: bytes, mode: int = DEFAULT_FILE_MODE) -> None:
    """Write `data` to `path` atomically as a regular file of exactly `mode` (default 0600).

    A missing parent directory is created (owner-only unless the mode lets others read). The target is replaced by
    rename, so a symlink at `path` is replaced, not followed; a directory at `path` is an error. Raises OSError
    (the temporary file removed, the old target untouched).
    """
    parent = path.parent
    make_dirs(parent, dir_mode(mode))
    tmp = parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, mode & 0o777)
    try:
        try:
            os.fchmod(fd, mode & 0o777)  # exactly this mode, whatever the umask took away
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _sync_dir(parent)


def _sync_dir(directory: Path) -> None:
    """Make the rename durable; a file system that cannot fsync a directory is not an error."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_output(path: Path, data: bytes, mode: int = DEFAULT_FILE_MODE) -> None:
    """`write_private`, with any failure raised as OutputError naming the file ("disk full: …" when it is)."""
    try:
        write_private(path, data, mode)
    except OSError as exc:
        reason = disk_full_reason(exc)
        why = reason or (exc.strerror or str(exc))
        raise OutputError(
            f"cannot write {path}: {why} (no partial file left; a previous version, if any, is unchanged)"
        ) from exc


def create_private_file(path: Path) -> bool:
    """Create `path` empty with mode 0600 if it does not exist (never through a symlink). True if created here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def is_regular_file(path: Path) -> bool:
    """True for a regular file (not a symlink to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def disk_full_reason(exc: BaseException) -> str | None:
    """The reason ("disk full: …") when `exc` (or what caused it) says there is no space left; None otherwise."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = _full_text(current)
        if text is not None:
            return f"disk full: {text}"
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's exception
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


def _full_text(exc: BaseException) -> str | None:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or os.strerror(exc.errno or 0)}{where}"
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE):
        return f"the SQLite store could not grow ({exc})"
    if getattr(exc, "sqlstate", None) == _PG_DISK_FULL or getattr(exc, "pgcode", None) == _PG_DISK_FULL:
        return f"the PostgreSQL server's disk is full ({str(exc).strip().splitlines()[0] if str(exc) else ''})"
    return None
