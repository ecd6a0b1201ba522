"""The lock and the markers beside the outputs, and the clean-up of what killed runs leave.

Concurrent runs (the schedule and `rhgen watch`, two crons) take turns on a flock beside the
backends file; only the run holding it writes, stages a check or removes leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import fingerprint
from .check import CHECK_PREFIX
from .errors import ApplyError
from .files import beside, folder_of, open_own, reason, temp_prefix, write_atomically

if TYPE_CHECKING:
    from .fingerprint import Stamp

log = logging.getLogger(__name__)

LOCK_NAME = ".rhgen.lock"
GENERATION = ".rhgen.generation"  # rewritten after every swap: the one file a sidekick's haproxy must watch


@contextlib.contextmanager
def exclusive_lock(path: str, timeout: float = 120.0) -> Iterator[None]:
    """flock on a lock file beside the outputs: concurrent runs take turns, never interleave."""
    lock_path = beside(path, LOCK_NAME)
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
    lock_path = beside(anchor, LOCK_NAME)
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


def own_files(settings: Any, stamp: Stamp | None = None) -> list[str]:
    """Every file rhgen writes for these settings (with the paths a stamp recorded), and its own
    markers: where killed runs leave temp files."""
    anchor = settings.haproxy_backend_config
    written = list(stamp.paths) if stamp else []
    for name in ("haproxy_config", "haproxy_backend_config", "haproxy_domain_map", "haproxy_ssl_cert", "haproxy_ssl_crt_list"):
        written.append(getattr(settings, name))
    markers = [fingerprint.stamp_path(anchor), fingerprint.answers_path(anchor), generation_path(anchor)]
    return list(dict.fromkeys(written + markers))


def remove_stale_temps(paths: Sequence[str]) -> None:
    """Temp files and staging folders left by a run that was killed (only ever ours, by name;
    called under the lock, so no other run is writing them)."""
    for path in paths:
        folder = folder_of(path)
        prefix = temp_prefix(path)
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


def leftovers(paths: Sequence[str]) -> bool:
    """Whether a killed run left temp files or a staging folder beside these paths (one listdir each)."""
    prefixes = tuple(temp_prefix(p) for p in paths)
    for folder in dict.fromkeys(folder_of(p) for p in paths):
        with contextlib.suppress(OSError):
            if any(n.startswith(CHECK_PREFIX) or (n.startswith(prefixes) and n.endswith(".tmp")) for n in os.listdir(folder)):
                return True
    return False


def clean_up_if_idle(paths: Sequence[str], anchor: str) -> None:
    """A run with nothing to change still removes what killed runs left (a staged set can hold a
    private key) -- but only when no run holds the lock: a staging folder may be a live run's."""
    if not leftovers(paths):
        return
    fd = open_own(beside(anchor, LOCK_NAME), os.O_RDWR | os.O_CREAT)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # that run removes them itself
        remove_stale_temps(paths)
    finally:
        os.close(fd)


def generation_path(anchor: str) -> str:
    return beside(anchor, GENERATION)


def write_generation(anchor: str, generation: str) -> None:
    """Say that a new set is in service: a watcher (the sidekick layout) sees every file haproxy
    loads change (a crt-list, a certificate folder) by watching this one."""
    try:
        write_atomically(generation_path(anchor), f"{generation}\n".encode())
    except OSError as exc:
        raise ApplyError(f"{generation_path(anchor)}: cannot write ({reason(exc)})") from None
