"""Servers leaving through the runtime API: drained at once, finished in the background.

A server gone from backends.cfg is set to `drain` straight away, so no new request reaches it.
Waiting until its sessions end (at most RHGEN_DRAIN_TIMEOUT), then maintenance, shutting what is
left and `del server`, happens in a thread of its own: `rhgen watch` goes on with the next change
(a container started while another one drains a 3 s request is routed at once, not after it).
A one-shot `rhgen generate` waits for it under its lock (wait()), as before.

A drain that cannot finish (the runtime API refuses; a reload took the server away first) is
logged: the server stays in maintenance, so it takes no traffic, and the next reload drops it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from . import runtime
from .errors import RuntimeApiError

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
# What haproxy answers when the server is already gone (a reload left it out): nothing to finish.
GONE = ("No such server.", "No such backend.", "Can't find backend.")

_lock = threading.Lock()
# (stats socket, backend, server) -> (the thread finishing its drain, the event that tells it to hurry);
# an entry goes when its drain has finished, so these are exactly the drains still running.
_draining: dict[tuple[str, str, str], tuple[threading.Thread, threading.Event]] = {}


def start(socket_path: str, removed: Sequence[tuple[str, str]], drain_timeout: float) -> None:
    """Drain each removed server now; wait for its sessions, then delete it, in the background."""
    for backend, name in removed:
        runtime.expect(socket_path, f"set server {backend}/{name} state drain", "")
    if not removed:
        return
    hurry = threading.Event()
    # Not a daemon: a process that ends (a one-shot run, a watch told to stop) still finishes its drains.
    thread = threading.Thread(target=_finish, args=(socket_path, tuple(removed), drain_timeout, hurry), name="rhgen-drain")
    with _lock:
        _draining.update({(socket_path, backend, name): (thread, hurry) for backend, name in removed})
        thread.start()


def draining(socket_path: str) -> set[tuple[str, str]]:
    """(backend, server) of the servers this process is still draining through `socket_path`."""
    with _lock:
        return {(backend, name) for socket, backend, name in _draining if socket == socket_path}


def finish_now(socket_path: str, servers: Sequence[tuple[str, str]]) -> None:
    """Servers about to be added again under the same name: their drains end now (sessions shut);
    the drains of other servers go on."""
    with _lock:
        hurried = [_draining[(socket_path, b, n)] for b, n in servers if (socket_path, b, n) in _draining]
    for _, hurry in hurried:
        hurry.set()
    for thread, _ in hurried:
        thread.join()


def wait() -> None:
    """Until every drain this process started has finished."""
    with _lock:
        threads = {thread for thread, _ in _draining.values()}
    for thread in threads:
        thread.join()


def _finish(socket_path: str, removed: tuple[tuple[str, str], ...], drain_timeout: float, hurry: threading.Event) -> None:
    try:
        _wait_for_sessions(socket_path, removed, drain_timeout, hurry)
        for backend, name in removed:
            _delete(socket_path, backend, name)
    except RuntimeApiError as exc:
        log.warning("%s; the server stays in maintenance (no traffic) until the next reload", exc)
    finally:
        with _lock:
            for backend, name in removed:
                _draining.pop((socket_path, backend, name), None)


def _wait_for_sessions(socket_path: str, removed: tuple[tuple[str, str], ...], drain_timeout: float,
                       hurry: threading.Event) -> None:
    deadline = time.monotonic() + drain_timeout
    waiting = set(removed)
    while waiting and time.monotonic() < deadline and not hurry.is_set():
        for backend in {b for b, _ in waiting}:
            counts = _sessions(socket_path, backend)
            waiting -= {(backend, name) for b, name in waiting if b == backend and not counts.get(name)}
        if waiting:
            hurry.wait(POLL_SECONDS)
    if waiting and not hurry.is_set():
        log.info("%d removed server(s) still busy after %.0f s of drain; shutting their sessions", len(waiting), drain_timeout)


def _delete(socket_path: str, backend: str, name: str) -> None:
    if runtime.expect(socket_path, f"set server {backend}/{name} state maint", "", *GONE) in GONE:
        return
    runtime.expect(socket_path, f"shutdown sessions server {backend}/{name}", "", *GONE)
    # A shut session lets go of its server connection a moment later.
    for attempt in range(20):
        answer = runtime.send(socket_path, f"del server {backend}/{name}").strip()
        if answer == "Server deleted." or answer in GONE:
            return
        if "still has connections" not in answer or attempt == 19:
            raise RuntimeApiError(f"runtime API `del server {backend}/{name}`: {answer or 'no answer'}")
        time.sleep(POLL_SECONDS)


def _sessions(socket_path: str, backend: str) -> dict[str, int]:
    """Current sessions plus queued requests per server of `backend`, from `show stat` (CSV)."""
    answer = runtime.send(socket_path, f"show stat {backend} 4 -1")
    counts = {}
    for line in answer.splitlines():
        fields = line.split(",")
        if len(fields) > 4 and fields[0] == backend and not line.startswith("#"):
            counts[fields[1]] = int(fields[2] or 0) + int(fields[4] or 0)  # qcur + scur
    return counts
