"""Watch stage: run the pipeline when the source changes instead of by the clock.

A thread follows the source (Rancher long poll, Docker events, file polling) and only says
"something may have changed". The main thread runs at once on the first change after a quiet
period of RHGEN_SETTLE seconds (the leading edge: one container started is routed without any
wait), then coalesces whatever follows: the next run comes once the source has been quiet for
RHGEN_SETTLE seconds (at most MAX_SETTLE_FACTOR settle windows after the first change of them),
so fifty containers starting together give two runs: the first one, and all the rest. A run on the
leading edge is confirmed by one more a settle window later (Docker announces some changes before its
API shows them), which changes nothing unless the first read too early. A failed run
leaves the files in service untouched and is retried with backoff (at most 2 s); every RHGEN_RESYNC seconds
a run happens anyway, as a safety net for a missed change. SIGTERM and SIGINT end the loop
after the current run. `generate_on_change` is what `rhgen watch` runs: generate per cycle,
a repair of the live map when nothing changed, one line per change.
"""

from __future__ import annotations

import enum
import logging
import math
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import sources
from .errors import RhgenError
from .files import read_live
from .messages import printable

log = logging.getLogger(__name__)

CHANGE = "change"
STOP = "stop"
MAX_SETTLE_FACTOR = 5  # a source that never goes quiet still runs every 5 settle windows
RESTART_WATCHER_SECONDS = 5.0
# A failed run is retried at most this long after the previous try: a source that answers
# again is back in use within seconds (the Rancher watcher also says so when it recovers).
RETRY_CAP_SECONDS = 2.0


class Ran(enum.Enum):
    """What a cycle did (a plain True/False also works: ok, or failed)."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    FAILED = "failed"


@dataclass(frozen=True)
class Timing:
    settle: float
    resync: float

    @property
    def max_settle(self) -> float:
        return self.settle * MAX_SETTLE_FACTOR


@dataclass(frozen=True)
class Schedule:
    """When the next run is due; pure, so the debounce rules are testable without clocks or threads."""

    next_resync: float
    dirty_since: float | None = None  # first change not yet run
    last_change: float = -math.inf  # kept across runs, with last_run: they tell a quiet period from a burst
    last_run: float = -math.inf  # when the last run ended
    quiet_before: float = 0.0  # seconds without change or run before dirty_since
    failures: int = 0
    retry_at: float | None = None
    # A run on the leading edge reads the source at the moment of the event, and Docker sends some
    # events (network connect, disconnect) before its API shows the new state: one more run, a
    # settle window later, reads it settled.
    confirm_at: float | None = None

    def leading(self, timing: Timing) -> bool:
        """A change is pending and came after a quiet period: nothing to coalesce it with."""
        return self.dirty_since is not None and self.quiet_before >= timing.settle

    def due(self, timing: Timing) -> float:
        if self.dirty_since is not None:
            if self.leading(timing):
                return self.dirty_since  # the leading edge: nothing to coalesce with, run now
            return min(self.last_change + timing.settle, self.dirty_since + timing.max_settle)
        pending = [at for at in (self.retry_at, self.confirm_at) if at is not None]
        return min([self.next_resync, *pending])

    def changed(self, now: float) -> Schedule:
        if self.dirty_since is not None:
            return replace(self, last_change=now)
        return replace(self, dirty_since=now, last_change=now,
                       quiet_before=now - max(self.last_change, self.last_run))

    def ran(self, now: float, ok: bool, timing: Timing, changed: bool = True) -> Schedule:
        """After a run; changed=False: it changed nothing, so it opens no burst window (a `network connect`
        event comes just before a container's `start`: the run on it must not make the start wait)."""
        failures = 0 if ok else self.failures + 1
        before = self.dirty_since - self.quiet_before if self.dirty_since is not None else self.last_change
        quiet = ok and not changed
        return Schedule(
            next_resync=now + timing.resync,
            last_change=min(before, self.last_change) if quiet else self.last_change,
            last_run=min(before, self.last_run) if quiet else now,
            failures=failures,
            retry_at=None if ok else now + sources.retry_delay(failures, cap=RETRY_CAP_SECONDS),
            confirm_at=self.dirty_since + timing.settle if ok and self.leading(timing) else None,
        )


def loop(
    events: queue.SimpleQueue[str],
    cycle: Callable[[], bool | Ran],
    timing: Timing,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Call cycle() as CHANGE events and the schedule say, until a STOP event; return the number of runs.
    cycle() returns False (or Ran.FAILED) when the run failed (it is then retried with backoff), and
    Ran.UNCHANGED when it changed nothing."""
    now = clock()
    schedule = Schedule(next_resync=now + timing.resync).changed(now)  # the first run, at once
    runs = 0
    while True:
        wait = schedule.due(timing) - clock()
        try:
            event = events.get(timeout=wait) if wait > 0 else events.get_nowait()
        except queue.Empty:
            event = None
        changes = 0
        while event is not None:  # everything already queued joins this decision: one run for all of it
            if event == STOP:
                return runs
            changes += event == CHANGE
            try:
                event = events.get_nowait()
            except queue.Empty:
                event = None
        if changes:
            schedule = schedule.changed(clock())
        if clock() >= schedule.due(timing):
            started = clock()
            if schedule.dirty_since is not None:
                log.info("run: %s change, first seen %.0f ms ago", "leading" if schedule.leading(timing) else "coalesced",
                         (started - schedule.dirty_since) * 1000)
            result = cycle()
            runs += 1
            ok = result not in (False, Ran.FAILED)
            schedule = schedule.ran(clock(), ok, timing, changed=result is not Ran.UNCHANGED)
            log.info("run: done in %.0f ms", (clock() - started) * 1000)
            if not ok:
                log.info("next try in %.1f s", schedule.retry_at - clock() if schedule.retry_at else 0)


def run(settings: Any, cycle: Callable[[], bool | Ran], watch_source: Callable[..., None] = sources.watch) -> int:
    """Watch the configured source and call cycle() on change, until SIGTERM or SIGINT; return the run count.
    Must be called from the main thread (it installs the signal handlers, and restores them)."""
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        events.put(STOP)  # SimpleQueue.put is safe in a signal handler; the loop ends after the current run

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    watcher = threading.Thread(
        target=_follow, args=(watch_source, settings, lambda: events.put(CHANGE), stop), name="rhgen-watch", daemon=True
    )
    try:
        watcher.start()
        return loop(events, cycle, Timing(settings.watch_settle, settings.watch_resync))
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _follow(watch_source: Callable[..., None], settings: Any, notify: Callable[[], None], stop: threading.Event) -> None:
    """Run the source's watcher; should it fail unexpectedly, log it and start it again."""
    while not stop.is_set():
        try:
            watch_source(settings, notify, stop)
        except Exception:  # noqa: BLE001 - a watcher bug must not end the watch; the resync still runs
            log.exception("watching the source failed; restarting in %.0f s", RESTART_WATCHER_SECONDS)
        if not stop.wait(RESTART_WATCHER_SECONDS):
            notify()


def generate_on_change(settings: Any, allow_empty: bool, echo: Callable[..., None]) -> None:
    """`rhgen watch`: generate on every change until SIGTERM or SIGINT; `echo(text, err=)` reports.
    A failed run is reported and keeps the configuration in service (the loop retries it)."""
    from . import runtime
    from .pipeline import generate

    counts = {"reloads": 0, "runtime": 0}

    def cycle() -> Ran:
        try:
            # A server drained through the runtime API finishes in the background: the next change need not wait.
            outcome = generate(settings, allow_empty=allow_empty, wait_for_drains=False)
            if not outcome.changed:
                runtime.repair_drift(settings, settings.haproxy_domain_map, read_live(settings.haproxy_domain_map))
        except RhgenError as exc:
            echo(printable(f"rhgen: error: {exc}; the configuration in service stays", lines=True), err=True)
            return Ran.FAILED
        counts["reloads"] += outcome.reloaded
        counts["runtime"] += outcome.runtime_api
        if outcome.changed:
            echo(outcome.summary())
        return Ran.CHANGED if outcome.changed or outcome.reloaded else Ran.UNCHANGED

    echo(f"rhgen: watching the {sources.kind(settings)} source", err=True)
    runs = run(settings, cycle)
    echo(
        f"rhgen: watch stopped after {runs} runs: {counts['reloads']} reloads, "
        f"{counts['runtime']} map updates through the runtime API without a reload",
        err=True,
    )
