"""The long-running helpers the entrypoint starts beside haproxy: retry until a first
configuration exists, the plain schedule (where supercronic is missing), and the file watch of
the haproxy-only mode. SIGTERM and SIGINT end each after the run in progress, with status 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import queue
import select
import signal
import struct
import subprocess  # noqa: S404 - argument lists only  # nosec B404
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import haproxy_control
from .errors import RhgenError, SettingsError

log = logging.getLogger(__name__)

SETTLE_SECONDS = 0.3  # rhgen swaps several files back to back: one reload for the burst
QUIET_CHECK_SECONDS = 60.0  # a quiet minute still compares the files, should an event go missing


class Stop:
    """Set by SIGTERM or SIGINT. Not a threading.Event: its set() takes a lock that the interrupted
    main thread may hold (a deadlock); SimpleQueue.put is safe in a signal handler."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._set = False

    def set(self, *_: object) -> None:
        self._set = True
        self._queue.put(True)

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to timeout seconds; True (at once) when stopped."""
        if not self._set:
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=max(timeout, 0.0))
        return self._set


@contextlib.contextmanager
def stop_on_signal() -> Iterator[Stop]:
    """A Stop set by SIGTERM or SIGINT; the previous handlers come back afterwards."""
    stop = Stop()
    previous = {sig: signal.signal(sig, stop.set) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def until_ready(step: Callable[[], None], settings: Any, say: Callable[[str], None]) -> bool:
    """Call step() until it succeeds, waiting 1, 2, 4 ... RHGEN_RETRY_MAX seconds between tries.
    A settings error is raised at once (retrying cannot help); False when a signal ended it."""
    delay = 1.0
    with stop_on_signal() as stop:
        while not stop.is_set():
            try:
                step()
                return True
            except SettingsError:
                raise
            except RhgenError as exc:
                say(f"error: {exc}")
            say(f"no valid configuration yet; retrying in {delay:g} s")
            if stop.wait(delay):
                break
            delay = min(delay * 2, settings.retry_max)
    return False


def schedule(settings: Any, say: Callable[[str], None]) -> None:
    """`rhgen generate` every RHGEN_INTERVAL seconds, start to start, as its own process (a fresh
    run reads the settings and files anew, as a cron job does). The first run waits one period:
    the entrypoint has just run it. A run in progress finishes before a signal ends the loop."""
    period = settings.schedule_interval
    command = [sys.executable, "-m", "rhgen", "generate"]
    say(f"running 'rhgen generate' every {period} s in a plain loop")
    with stop_on_signal() as stop:
        started = time.monotonic()
        while not stop.wait(max(0.0, started + period - time.monotonic())):
            started = time.monotonic()
            subprocess.run(command, check=False)  # noqa: S603 - our own command  # nosec B603


def watch_files(settings: Any, say: Callable[[str], None]) -> None:
    """Reload haproxy when the generated files differ from those last tried: by inotify on their
    folders (rhgen renames new files over them) or by polling. A set haproxy -c rejects is not
    tried again until it changes again; the running worker keeps serving meanwhile."""
    last: str | None = None

    def maybe_reload() -> None:
        nonlocal last
        now = haproxy_control.fingerprint(settings)
        if now == last:
            return
        last = now
        try:
            haproxy_control.reload_locked(settings)
            say("files changed: haproxy reloaded")
        except RhgenError as exc:
            say(f"error: {exc}")
            say("files changed, but the reload failed: haproxy keeps serving the previous configuration")

    with stop_on_signal() as stop:
        # haproxy starts beside this watcher: once its master answers, the marker says what it loaded.
        while haproxy_control.master_state(settings.haproxy_master_socket) is None:
            if stop.wait(0.1):
                return
        last = haproxy_control.read_loaded(settings)
        watcher = None
        if settings.file_watch != "poll":
            try:
                watcher = Inotify(haproxy_control.watched_files(settings))
            except OSError as exc:
                say(f"inotify is not available ({exc.strerror}); polling instead")
        if watcher:
            say(f"watching {' '.join(watcher.folders)} with inotify")
            with watcher:
                maybe_reload()  # a change since haproxy started, before the watches were there
                while not stop.is_set():
                    if watcher.wait(QUIET_CHECK_SECONDS, stop):
                        while watcher.wait(SETTLE_SECONDS, stop):  # let the burst settle
                            pass
                    if not stop.is_set():
                        maybe_reload()
            return
        say(f"polling the generated files every {settings.poll_interval:g} s")
        maybe_reload()
        while not stop.wait(settings.poll_interval):
            maybe_reload()


class Inotify:
    """Linux inotify on the folders of `files` (the kernel interface, through libc): wait() says
    whether one of those files was written, replaced, created, deleted or changed its mode."""

    _MASK = 0x8 | 0x80 | 0x100 | 0x200 | 0x4  # CLOSE_WRITE, MOVED_TO, CREATE, DELETE, ATTRIB
    _HEADER = struct.Struct("iIII")

    def __init__(self, files: list[str]) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.names = {os.path.abspath(f) for f in files}
        self.folders = list(dict.fromkeys(os.path.dirname(f) for f in self.names if os.path.isdir(os.path.dirname(f))))
        self.by_watch: dict[int, str] = {}
        for folder in self.folders:
            watch = libc.inotify_add_watch(self.fd, os.fsencode(folder), self._MASK)
            if watch < 0:
                errno = ctypes.get_errno()
                os.close(self.fd)
                raise OSError(errno, os.strerror(errno), folder)
            self.by_watch[watch] = folder

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def wait(self, timeout: float, stop: Stop) -> bool:
        """True when a watched file changed within timeout; False on timeout or stop."""
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            rest = deadline - time.monotonic()
            if rest <= 0:
                return False
            # short slices: a signal sets `stop` between them (select restarts after a handler)
            ready, _, _ = select.select([self.fd], [], [], min(rest, 0.5))
            if ready and self._changed():
                return True
        return False

    def _changed(self) -> bool:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        changed, offset = False, 0
        while offset + self._HEADER.size <= len(data):
            watch, _, _, length = self._HEADER.unpack_from(data, offset)
            name = data[offset + self._HEADER.size: offset + self._HEADER.size + length].rstrip(b"\0")
            offset += self._HEADER.size + length
            folder = self.by_watch.get(watch)
            if folder and os.path.join(folder, os.fsdecode(name)) in self.names:
                changed = True
        return changed
