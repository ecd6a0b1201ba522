"""Watch stage: run the pipeline when the source changes instead of by the clock.

A thread follows the source (Rancher long poll, Docker events, file polling) and only says
"something may have changed". The main thread debounces: it runs once the source has been
quiet for RHGEN_SETTLE seconds (at most MAX_SETTLE_FACTOR settle windows after the first
change), so fifty containers starting together give one run and one reload. A failed run
leaves the files in service untouched and is retried with backoff (at most 2 s); every RHGEN_RESYNC seconds
a run happens anyway, as a safety net for a missed change. SIGTERM and SIGINT end the loop
after the current run. `generate_on_change` is what `rhgen watch` runs: generate per cycle,
a repair of the live map when nothing changed, one line per change.
"""

from __future__ import annotations

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
    last_change: float = 0.0
    failures: int = 0
    retry_at: float | None = None

    def due(self, timing: Timing) -> float:
        if self.dirty_since is not None:
            return min(self.last_change + timing.settle, self.dirty_since + timing.max_settle)
        return min(self.next_resync, self.retry_at if self.retry_at is not None else math.inf)

    def changed(self, now: float) -> Schedule:
        return replace(self, dirty_since=self.dirty_since if self.dirty_since is not None else now, last_change=now)

    def ran(self, now: float, ok: bool, timing: Timing) -> Schedule:
        failures = 0 if ok else self.failures + 1
        return Schedule(
            next_resync=now + timing.resync,
            failures=failures,
            retry_at=None if ok else now + sources.retry_delay(failures, cap=RETRY_CAP_SECONDS),
        )


def loop(
    events: queue.SimpleQueue[str],
    cycle: Callable[[], bool],
    timing: Timing,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Call cycle() as CHANGE events and the schedule say, until a STOP event; return the number of runs.
    cycle() returns False when the run failed (it is then retried with backoff)."""
    now = clock()
    schedule = Schedule(next_resync=now + timing.resync).changed(now)  # the first run, after one settle
    runs = 0
    while True:
        wait = schedule.due(timing) - clock()
        try:
            event = events.get(timeout=wait) if wait > 0 else events.get_nowait()
        except queue.Empty:
            event = None
        if event == STOP:
            return runs
        if event == CHANGE:
            schedule = schedule.changed(clock())
        if clock() >= schedule.due(timing):
            ok = cycle()
            runs += 1
            schedule = schedule.ran(clock(), ok, timing)
            if not ok:
                log.info("next try in %.1f s", schedule.retry_at - clock() if schedule.retry_at else 0)


def run(settings: Any, cycle: Callable[[], bool], watch_source: Callable[..., None] = sources.watch) -> int:
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

    def cycle() -> bool:
        try:
            outcome = generate(settings, allow_empty=allow_empty)
            if not outcome.changed:
                runtime.repair_drift(settings, settings.haproxy_domain_map, read_live(settings.haproxy_domain_map))
        except RhgenError as exc:
            echo(printable(f"rhgen: error: {exc}; the configuration in service stays", lines=True), err=True)
            return False
        counts["reloads"] += outcome.reloaded
        counts["runtime"] += outcome.runtime_api
        if outcome.changed:
            echo(outcome.summary())
        return True

    echo(f"rhgen: watching the {sources.kind(settings)} source", err=True)
    runs = run(settings, cycle)
    echo(
        f"rhgen: watch stopped after {runs} runs: {counts['reloads']} reloads, "
        f"{counts['runtime']} map updates through the runtime API without a reload",
        err=True,
    )
