"""Reload state: the one owner of "a reload is owed", and the reload itself (RELOAD_COMMAND).

Files swapped in are not in service until haproxy reloads. A marker beside the lock
(.rhgen.reload-pending) says a reload is owed from just before the swap until a reload (or the
runtime API) succeeds, so a run killed or failing between swap and reload is reloaded by the
next run even though that run sees no change.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess  # noqa: S404 - argument lists only, never a shell  # nosec B404
from collections.abc import Iterator

from .errors import ApplyError, SwapUndone
from .files import beside, reason, touch_own

RELOAD_PENDING = ".rhgen.reload-pending"
RELOAD_TIMEOUT = 60


def marker_path(anchor: str) -> str:
    return beside(anchor, RELOAD_PENDING)


def pending(anchor: str) -> bool:
    """True when files were swapped but the reload after them never succeeded."""
    return os.path.lexists(marker_path(anchor))


@contextlib.contextmanager
def owed_across(anchor: str, reload_follows: bool) -> Iterator[None]:
    """Mark a reload owed while files are swapped (when a reload follows at all); a swap that
    put every file back (SwapUndone) owes nothing new, so the mark goes if it was not there before."""
    if not reload_follows:
        yield
        return
    was_pending = pending(anchor)
    try:
        touch_own(marker_path(anchor))
    except OSError as exc:
        raise ApplyError(f"{marker_path(anchor)}: cannot write ({reason(exc)})") from None
    try:
        yield
    except SwapUndone:
        if not was_pending:
            with contextlib.suppress(OSError):
                os.unlink(marker_path(anchor))
        raise


def settled(anchor: str) -> None:
    """haproxy serves the files in service (reloaded, or changed through the runtime API)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(marker_path(anchor))


def reload(command: str, anchor: str) -> None:
    """Run RELOAD_COMMAND; on success the owed reload is settled."""
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
    settled(anchor)
