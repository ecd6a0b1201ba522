"""Swap stage: replace the changed live files with the new ones, atomically, all or none.

The promise: if anything fails before the swap, the files in service are untouched; the swap
itself replaces each file with one rename, so every live file is always complete. Whether a
reload must follow is not this stage's business (reloads.py keeps that state).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ApplyError, SwapUndone
from .files import folder_of, fsync_folder, reason, stage, temp_prefix

if TYPE_CHECKING:
    from .render import OutputFile

log = logging.getLogger(__name__)

# chattr +i / +a: such a file cannot be renamed over, even by root (FS_IOC_GETFLAGS, linux/fs.h)
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10
_FS_APPEND_FL = 0x20


def check_folders(paths: Sequence[str]) -> None:
    for path in paths:
        folder = folder_of(path)
        if not os.path.isdir(folder):
            raise ApplyError(f"{path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ApplyError(f"{path}: folder {folder} is not writable")


def _inode_flags(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, b"\0" * 4))[0]
    except OSError:  # a file system without inode flags (tmpfs before 6.0, overlay …)
        return 0
    finally:
        os.close(fd)


def _mount_points() -> set[str]:
    """Every mount point of this process (field 5 of mountinfo, with " ", tab, newline and "\\"
    octal-escaped): a file mounted on its own (docker run -v file:file) cannot be renamed over."""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def why_not_replaceable(path: str, mounts: set[str]) -> str | None:
    """Why a rename over path would fail, found out before any file is swapped; None when it can."""
    folder = folder_of(path)
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return f"folder {folder} is on a read-only file system"
    if _inode_flags(folder) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
        return f"folder {folder} is immutable, chattr +i/+a"
    if not os.path.lexists(path) or os.path.islink(path):  # a link itself is replaced, whatever it points at
        return None
    if os.path.isdir(path):
        return "a folder is in the way"
    if _inode_flags(path) & (_FS_IMMUTABLE_FL | _FS_APPEND_FL):
        return "immutable, chattr +i/+a"
    if os.path.join(os.path.realpath(folder), os.path.basename(path)) in mounts:
        return "a file mounted on its own, which no rename can replace"
    return None


def check_replaceable(paths: Sequence[str]) -> None:
    """Every target must be replaceable before the first one is: otherwise a set half new, half old."""
    mounts = _mount_points()
    for path in paths:
        why = why_not_replaceable(path, mounts)
        if why:
            raise ApplyError(f"{path}: cannot write ({why})")


def swap(files: Sequence[OutputFile]) -> None:
    """Stage every changed file first, then rename them over the live ones back to back, in
    the given order (the main config last). A write that fails (a full disk, an I/O error)
    fails before the first rename, so the live set stays whole; a rename that still fails
    (a target made immutable since check_replaceable looked) puts back the files already
    swapped; both raise SwapUndone. A kill can only fall between two renames, a window of
    microseconds, and the next run completes the set."""
    output_path = files[0].path if files else ""
    staged: list[tuple[str, str]] = []
    kept: list[tuple[str, str | None]] = []  # (live path, a hard link to the file it replaces)
    swapped = 0
    try:
        for output in files:
            output_path = output.path
            staged.append((stage(output.path, output.content, output.mode, output.secret), output.path))
            kept.append((output.path, _keep_old(output.path)))
        for temp, output_path in staged:
            os.replace(temp, output_path)
            swapped += 1
        for folder in dict.fromkeys(folder_of(f.path) for f in files):
            fsync_folder(folder)
    except OSError as exc:
        message = f"{output_path}: cannot write ({reason(exc)})"
        if swapped < len(files):  # failed before the last rename: what is in service goes back to what it was
            _put_back(kept[:swapped])
            raise SwapUndone(message) from None
        raise ApplyError(message) from None
    finally:
        for temp, _ in staged[swapped:]:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        for _, old in kept:
            if old:
                with contextlib.suppress(OSError):
                    os.unlink(old)


def _keep_old(path: str) -> str | None:
    """A hard link to the live file (or a copy of the live link), so a failed swap can rename the
    very same inode back."""
    if not os.path.lexists(path):
        return None
    for _ in range(100):
        old = os.path.join(folder_of(path), f"{temp_prefix(path)}{os.urandom(6).hex()}.old.tmp")
        try:
            if os.path.islink(path):
                os.symlink(os.readlink(path), old)
            else:
                os.link(path, old, follow_symlinks=False)
            return old
        except FileExistsError:
            continue
        except OSError:  # no hard links here (vfat, some FUSE): a copy, a new inode with the same bytes
            return stage(path, Path(path).read_bytes(), 0o600)
    raise FileExistsError(errno.EEXIST, "no free name for a hard link", path)


def _put_back(swapped: Sequence[tuple[str, str | None]]) -> None:
    for path, old in reversed(swapped):
        with contextlib.suppress(OSError):
            if old:
                os.replace(old, path)
            else:  # it did not exist before this run
                os.unlink(path)
        log.info("%s: put back as it was", path)
