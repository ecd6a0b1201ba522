"""Check and swap stages: compare with the live files, `haproxy -c` the staged set, swap atomically, reload.

The promise: if anything fails before the swap, the files in service are untouched; the
swap itself replaces each file with one rename, so every live file is always complete.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import fcntl
import logging
import os
import shlex
import re
import shutil
import struct
import subprocess  # noqa: S404 - argument lists only, never a shell  # nosec B404
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ApplyError, CheckError

if TYPE_CHECKING:
    from .render import OutputFile

log = logging.getLogger(__name__)

TEMP_MARK = ".rhgen-"
CHECK_PREFIX = ".rhgen-check-"  # the staged set haproxy -c reads
LOCK_NAME = ".rhgen.lock"
RELOAD_PENDING = ".rhgen.reload-pending"
GENERATION = ".rhgen.generation"  # rewritten after every swap: the one file a sidekick's haproxy must watch
CHECK_TIMEOUT = 120
RELOAD_TIMEOUT = 60


# --- comparing -------------------------------------------------------------------------------


def read_live(path: str) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ApplyError(f"{path}: cannot read ({exc.strerror})") from None


def changed_files(files: Sequence[OutputFile]) -> list[OutputFile]:
    return [f for f in files if read_live(f.path) != f.content]


def count_map_entries(content: bytes | None) -> int:
    if not content:
        return 0
    return sum(1 for line in content.splitlines() if line.strip() and not line.lstrip().startswith(b"#"))


def unified_diff(files: Sequence[OutputFile]) -> str:
    """A diff of every changed file against the live one; secret files say only that they change."""
    parts = []
    for output in files:
        if os.path.islink(output.path):  # never show what a link points at: it may be any file
            link = os.readlink(output.path)
            parts.append(
                f"--- {output.path}\n+++ {output.path}\n"
                f"@@ {output.path} is a symbolic link to {link}; rhgen would replace the link with a file @@\n"
            )
            continue
        old = read_live(output.path)
        if output.secret:
            parts.append(f"--- {output.path}\n+++ {output.path}\n@@ contents hidden: key material @@\n")
            continue
        old_lines = (old or b"").decode("utf-8", "replace").splitlines(keepends=True)
        new_lines = output.content.decode("utf-8").splitlines(keepends=True)
        parts.append(
            "".join(
                difflib.unified_diff(
                    old_lines, new_lines,
                    fromfile=output.path if old is not None else "/dev/null",
                    tofile=output.path,
                )
            )
        )
    return "".join(parts)


# --- checking --------------------------------------------------------------------------------


def check_config(
    haproxy_bin: str,
    render_for: Callable[[dict[str, str]], Sequence[OutputFile]],
    roles: Sequence[str],
    folder: str | None = None,
) -> None:
    """Write the complete new set into a private folder, each file referring to its staged
    siblings, and run `haproxy -c` on it; raise CheckError with haproxy's own lines.

    A real run stages beside the live files (`folder`, under the lock), so a run killed during
    the check leaves its copy, private key included, where the next run removes it
    (remove_stale_temps), not in TMPDIR for good; a dry run, which takes no lock, uses TMPDIR."""
    with tempfile.TemporaryDirectory(prefix=CHECK_PREFIX, dir=folder) as staging:
        staged = {role: os.path.join(staging, role) for role in roles}
        try:
            for output in render_for(staged):
                fd = os.open(staged[output.role], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(output.content)
        except OSError as exc:
            raise ApplyError(f"{staging}: cannot stage the new configuration for haproxy -c ({_reason(exc)})") from None
        haproxy_check(haproxy_bin, staged["config"], staged["backends"], "the new configuration", staged)


def haproxy_check(haproxy_bin: str, config: str, backends: str, what: str, names: dict[str, str] | None = None) -> None:
    """`haproxy -c` on config + backends; raise CheckError with haproxy's own lines, the paths of
    `names` (role -> path) shown as <new role>. The one place rhgen runs haproxy -c."""
    command = [haproxy_bin, "-c", "-f", config, "-f", backends]
    try:
        result = subprocess.run(  # noqa: S603 - an argument list, no shell; HAPROXY_BIN is the operator's own  # nosec B603
            command, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise CheckError(f"haproxy binary {haproxy_bin!r} not found (install haproxy or set HAPROXY_BIN)") from None
    except PermissionError:
        raise CheckError(f"haproxy binary {haproxy_bin!r} is not executable (HAPROXY_BIN)") from None
    except subprocess.TimeoutExpired:
        raise CheckError(f"haproxy -c did not finish within {CHECK_TIMEOUT} s") from None
    if result.returncode != 0:
        lines = _haproxy_errors(result.stdout + result.stderr, names or {})
        raise CheckError(f"haproxy -c rejected {what}:\n" + "\n".join(lines))


def _haproxy_errors(output: str, staged: dict[str, str]) -> list[str]:
    lines = [line for line in output.splitlines() if "[ALERT]" in line or "[WARNING]" in line] or output.splitlines()
    shown = []
    for line in lines[:20]:
        for role, path in staged.items():
            line = line.replace(path, f"<new {role}>")
        shown.append("  " + line.strip())
    return shown


# --- swapping --------------------------------------------------------------------------------


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}{TEMP_MARK}"


def _reason(exc: OSError) -> str:
    return "disk full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)


def stage(path: str, content: bytes, mode: int, secret: bool = False) -> str:
    """Write content to a new temp file in path's folder, fsynced, ready to be renamed over path;
    returns its name. It takes the mode (and, as root, the owner) of the file it will replace,
    except that a file holding key material is never readable by group or others."""
    folder = os.path.dirname(os.path.abspath(path))
    try:  # a link is replaced, never followed: its target's mode and owner are not the new file's
        current = None if os.path.islink(path) else os.stat(path)
    except FileNotFoundError:
        current = None
    if current:
        mode = current.st_mode & 0o7777
    if secret:  # a key file left world-readable (by the image rhgen replaces, or by hand) is tightened
        mode &= 0o700
    fd, temp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=folder)  # created 0600
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


def write_atomically(path: str, content: bytes, mode: int = 0o644) -> None:
    """One file: stage, rename over the target, fsync the folder."""
    temp = stage(path, content, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(os.path.dirname(os.path.abspath(path)))


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _marker(anchor: str, name: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(anchor)), name)


def reload_pending(anchor: str) -> bool:
    """True when files were swapped but the reload after them never succeeded."""
    return os.path.lexists(_marker(anchor, RELOAD_PENDING))


def open_own(path: str, flags: int, mode: int = 0o644) -> int:
    """Open a file rhgen keeps by a fixed name (lock, markers) without following a symbolic link:
    as root, a link planted there would make rhgen create or truncate whatever it points at."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ApplyError(f"{path}: is a symbolic link; rhgen does not follow links for its own files") from None
        raise ApplyError(f"{path}: cannot open ({_reason(exc)})") from None


def _touch_marker(path: str) -> None:
    fd = open_own(path, os.O_WRONLY | os.O_CREAT)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# chattr +i / +a: such a file cannot be renamed over, even by root (FS_IOC_GETFLAGS, linux/fs.h)
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10
_FS_APPEND_FL = 0x20


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
    folder = os.path.dirname(os.path.abspath(path))
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
        reason = why_not_replaceable(path, mounts)
        if reason:
            raise ApplyError(f"{path}: cannot write ({reason})")


def swap(files: Sequence[OutputFile], anchor: str, reload_follows: bool) -> None:
    """Stage every changed file first, then rename them over the live ones back to back, in
    the given order (the main config last). A write that fails (a full disk, an I/O error)
    fails before the first rename, so the live set stays whole; a rename that still fails
    (a target made immutable since check_replaceable looked) puts back the files already
    swapped; a kill can only fall between two renames, a window of microseconds, and the
    next run completes the set.

    When a reload follows, a marker beside the lock says so until it succeeds, so a run killed
    or failing between swap and reload is reloaded by the next run even though it sees no change."""
    marker = _marker(anchor, RELOAD_PENDING)
    was_pending = reload_pending(anchor)
    output_path = marker
    staged: list[tuple[str, str]] = []
    kept: list[tuple[str, str | None]] = []  # (live path, a hard link to the file it replaces)
    swapped = 0
    try:
        if reload_follows:
            _touch_marker(marker)
        for output in files:
            output_path = output.path
            staged.append((stage(output.path, output.content, output.mode, output.secret), output.path))
            kept.append((output.path, _keep_old(output.path)))
        for temp, output_path in staged:
            os.replace(temp, output_path)
            swapped += 1
        for folder in dict.fromkeys(os.path.dirname(os.path.abspath(f.path)) for f in files):
            _fsync_folder(folder)
    except OSError as exc:
        if swapped < len(staged):  # failed before the last rename: what is in service goes back to what it was
            _put_back(kept[:swapped])
            if reload_follows and not was_pending:
                with contextlib.suppress(OSError):
                    os.unlink(marker)
        raise ApplyError(f"{output_path}: cannot write ({_reason(exc)})") from None
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
        old = os.path.join(os.path.dirname(os.path.abspath(path)), f"{_temp_prefix(path)}{os.urandom(6).hex()}.old.tmp")
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


def remove_stale_temps(paths: Sequence[str]) -> None:
    """Temp files and staging folders left by a run that was killed (only ever ours, by name;
    called under the lock, so no other run is writing them)."""
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        prefix = _temp_prefix(path)
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                stale = os.path.join(folder, name)
                if name.startswith(prefix) and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(stale)
                        log.info("removed stale temp file %s", stale)
                elif name.startswith(CHECK_PREFIX) and os.path.isdir(stale) and not os.path.islink(stale):
                    shutil.rmtree(stale, ignore_errors=True)
                    log.info("removed stale check folder %s", stale)


def check_folders(paths: Sequence[str]) -> None:
    for path in paths:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ApplyError(f"{path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise ApplyError(f"{path}: folder {folder} is not writable")


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float = 120.0) -> Iterator[None]:
    """flock on a lock file beside the outputs: concurrent runs take turns, never interleave."""
    lock_path = _marker(path, LOCK_NAME)
    fd = open_own(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        _flock(fd, fcntl.LOCK_EX, lock_path, timeout)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def shared_lock(anchor: str, timeout: float = 120.0) -> Iterator[None]:
    """A shared hold on the lock a run takes while it swaps: files read under it are a complete
    set, never half of a swap. Without a lock file (no run ever happened here) there is nothing to wait for."""
    lock_path = _marker(anchor, LOCK_NAME)
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        _flock(fd, fcntl.LOCK_SH, lock_path, timeout)
        yield
    finally:
        os.close(fd)


def _flock(fd: int, operation: int, lock_path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ApplyError(f"lock file {lock_path}: another rhgen run held it for {timeout:.0f} s") from None
            time.sleep(0.02)


# --- reloading -------------------------------------------------------------------------------


def run_reload(command: str, anchor: str) -> None:
    argv = shlex.split(command)
    try:
        result = subprocess.run(  # noqa: S603 - argument list from the operator's RELOAD_COMMAND, no shell  # nosec B603
            argv, capture_output=True, text=True, timeout=RELOAD_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise ApplyError(f"files swapped, but RELOAD_COMMAND {argv[0]!r} was not found") from None
    except subprocess.TimeoutExpired:
        raise ApplyError(f"files swapped, but RELOAD_COMMAND did not finish within {RELOAD_TIMEOUT} s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = f": {detail[-1]}" if detail else ""
        raise ApplyError(f"files swapped, but RELOAD_COMMAND exited {result.returncode}{last}")
    clear_reload_pending(anchor)


def leftovers(paths: Sequence[str]) -> bool:
    """Whether a killed run left temp files or a staging folder beside these paths (one listdir each)."""
    prefixes = tuple(_temp_prefix(p) for p in paths)
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths):
        with contextlib.suppress(OSError):
            if any(n.startswith(CHECK_PREFIX) or (n.startswith(prefixes) and n.endswith(".tmp")) for n in os.listdir(folder)):
                return True
    return False


def clean_up_if_idle(paths: Sequence[str], anchor: str) -> None:
    """A run with nothing to change still removes what killed runs left (a staged set can hold a
    private key) -- but only when no run holds the lock: a staging folder may be a live run's."""
    if not leftovers(paths):
        return
    fd = open_own(_marker(anchor, LOCK_NAME), os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # that run removes them itself
        remove_stale_temps(paths)
    finally:
        os.close(fd)


def generation_path(anchor: str) -> str:
    return _marker(anchor, GENERATION)


def write_generation(anchor: str, generation: str) -> None:
    """Say that a new set is in service: a watcher (the sidekick layout) sees every file haproxy
    loads change (a crt-list, a certificate folder) by watching this one."""
    try:
        write_atomically(generation_path(anchor), f"{generation}\n".encode())
    except OSError as exc:
        raise ApplyError(f"{generation_path(anchor)}: cannot write ({_reason(exc)})") from None


def clear_reload_pending(anchor: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_marker(anchor, RELOAD_PENDING))
