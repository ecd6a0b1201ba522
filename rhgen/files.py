"""File primitives every writing stage shares: read a live file, stage a temp file beside its
target, replace a file atomically, open rhgen's own fixed-name files without following links.

Temp files are named `.<target>.rhgen-<random>.tmp`, beside their target, so a run killed while
writing leaves them where the next run finds and removes them (lock.remove_stale_temps).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import ApplyError

TEMP_MARK = ".rhgen-"


def read_live(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApplyError(f"{path}: cannot read ({exc.strerror})") from None


def reason(exc: OSError) -> str:
    return "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)


def folder_of(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def beside(anchor: str, name: str) -> str:
    """rhgen's own files (lock, markers, fingerprint) live in the folder of the backends file."""
    return os.path.join(folder_of(anchor), name)


def temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}{TEMP_MARK}"


def stage(path: str, content: bytes, mode: int, secret: bool = False) -> str:
    """Write content to a new temp file in path's folder, fsynced, ready to be renamed over path;
    returns its name. It takes the mode (and, as root, the owner) of the file it will replace,
    except that a file holding key material is never readable by group or others."""
    try:  # a link is replaced, never followed: its target's mode and owner are not the new file's
        current = None if os.path.islink(path) else os.stat(path)
    except FileNotFoundError:
        current = None
    if current:
        mode = current.st_mode & 0o7777
    if secret:  # a key file left world-readable (by the image rhgen replaces, or by hand) is tightened
        mode &= 0o700
    fd, temp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=folder_of(path))  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if current and os.geteuid() == 0:
                os.fchown(handle.fileno(), current.st_uid, current.st_gid)
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def write_atomically(path: str, content: bytes, mode: int = 0o644, secret: bool = False) -> None:
    """One file: stage, rename over the target, fsync the folder."""
    temp = stage(path, content, mode, secret)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_folder(folder_of(path))


def fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_own(path: str, flags: int, mode: int = 0o644) -> int:
    """Open a file rhgen keeps by a fixed name (lock, markers) without following a symbolic link:
    as root, a link planted there would make rhgen create or truncate whatever it points at."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ApplyError(f"{path}: is a symbolic link; rhgen does not follow links for its own files") from None
        raise ApplyError(f"{path}: cannot open ({reason(exc)})") from None


def touch_own(path: str) -> None:
    """Create (or keep) an empty marker file, durably."""
    fd = open_own(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
