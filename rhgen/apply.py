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
import shutil
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
        command = [haproxy_bin, "-c", "-f", staged["config"], "-f", staged["backends"]]
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
            lines = _haproxy_errors(result.stdout + result.stderr, staged)
            raise CheckError("haproxy -c rejected the new configuration:\n" + "\n".join(lines))


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
    try:
        current = os.stat(path)
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
    return os.path.exists(_marker(anchor, RELOAD_PENDING))


def swap(files: Sequence[OutputFile], anchor: str, reload_follows: bool) -> None:
    """Stage every changed file first, then rename them over the live ones back to back, in
    the given order (the main config last). A write that fails (a full disk, an I/O error)
    fails before the first rename, so the live set stays whole; a kill can only fall between
    two renames, a window of microseconds, and the next run completes the set.

    When a reload follows, a marker beside the lock says so until it succeeds, so a run killed
    or failing between swap and reload is reloaded by the next run even though it sees no change."""
    output_path = _marker(anchor, RELOAD_PENDING)
    staged: list[tuple[str, str]] = []
    try:
        if reload_follows:
            with open(output_path, "wb") as handle:
                os.fsync(handle.fileno())
        for output in files:
            output_path = output.path
            staged.append((stage(output.path, output.content, output.mode, output.secret), output.path))
        while staged:
            temp, output_path = staged[0]
            os.replace(temp, output_path)
            staged.pop(0)
        for folder in dict.fromkeys(os.path.dirname(os.path.abspath(f.path)) for f in files):
            _fsync_folder(folder)
    except OSError as exc:
        raise ApplyError(f"{output_path}: cannot write ({_reason(exc)})") from None
    finally:
        for temp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(temp)


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
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ApplyError(f"lock file {lock_path}: cannot open ({exc.strerror})") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ApplyError(f"lock file {lock_path}: another rhgen run held it for {timeout:.0f} s") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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


def clear_reload_pending(anchor: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_marker(anchor, RELOAD_PENDING))
