"""`rhgen watch`: the pipeline triggered by change (Rancher long poll, Docker events, file polling).

The end-to-end tests run `rhgen watch` as a process against a real metadata server or a real
file, and (where traffic matters) a real haproxy in master-worker mode that rhgen reloads. Docker
events are followed on the real daemon in test_docker_real.py.
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import container, MetadataServer
from tests.support.net import free_port, wait_for
from tests.support.rhgen import rhgen_env, Watch
from rhgen import watch
from rhgen.watch import CHANGE, STOP, Schedule, Timing

# --- the debounce rules, without clocks --------------------------------------------------------

TIMING = Timing(settle=0.2, resync=60)


def test_the_first_change_after_a_quiet_period_runs_at_once():
    schedule = Schedule(next_resync=60).ran(5.0, ok=True, timing=TIMING)
    assert schedule.changed(5.0 + TIMING.settle).due(TIMING) == 5.0 + TIMING.settle
    # Within a settle window of the last run it is the tail of a burst: coalesced, not run at once.
    assert schedule.changed(5.1).due(TIMING) == pytest.approx(5.1 + TIMING.settle)


def test_a_burst_runs_at_its_first_change_then_once_for_the_rest_after_it_went_quiet():
    schedule = Schedule(next_resync=60).ran(1.0, ok=True, timing=TIMING)
    schedule = schedule.changed(10.0)
    assert schedule.due(TIMING) == 10.0  # the leading edge
    schedule = schedule.ran(10.05, ok=True, timing=TIMING)
    for i in range(1, 50):  # the other 49 changes, 2 ms apart, came during and after that run
        schedule = schedule.changed(10 + i * 0.002)
    assert schedule.due(TIMING) == pytest.approx(10.098 + 0.2)


def test_a_run_that_changed_nothing_does_not_make_the_next_change_wait():
    # `docker start` sends `network connect` (a run, nothing running yet: no change), then `start`.
    schedule = Schedule(next_resync=60).ran(1.0, ok=True, timing=TIMING).changed(10.0)
    schedule = schedule.ran(10.05, ok=True, timing=TIMING, changed=False)
    assert schedule.changed(10.15).due(TIMING) == 10.15
    # A run that changed something does: the change right after it is the tail of a burst.
    changed = Schedule(next_resync=60).ran(1.0, ok=True, timing=TIMING).changed(10.0).ran(10.05, ok=True, timing=TIMING)
    assert changed.changed(10.15).due(TIMING) == pytest.approx(10.15 + TIMING.settle)


def test_a_run_on_the_leading_edge_is_confirmed_one_settle_window_later():
    # Docker sends `network connect` before /containers/json shows the network: the run at once can
    # read the old state, so one more run reads it a settle window after the change.
    schedule = Schedule(next_resync=60).ran(1.0, ok=True, timing=TIMING).changed(10.0)
    assert schedule.due(TIMING) == 10.0
    schedule = schedule.ran(10.05, ok=True, timing=TIMING, changed=False)
    assert schedule.due(TIMING) == pytest.approx(10.0 + TIMING.settle)
    # The confirming run confirms nothing further, and a coalesced run needs no confirming.
    confirmed = schedule.ran(10.25, ok=True, timing=TIMING, changed=False)
    assert confirmed.due(TIMING) == pytest.approx(10.25 + TIMING.resync)
    coalesced = Schedule(next_resync=60).ran(10.0, ok=True, timing=TIMING).changed(10.1).ran(10.4, ok=True, timing=TIMING)
    assert coalesced.due(TIMING) == pytest.approx(10.4 + TIMING.resync)


def test_a_source_that_never_goes_quiet_still_runs_every_few_settle_windows():
    schedule = Schedule(next_resync=60).changed(9.95).ran(10.0, ok=True, timing=TIMING)
    for i in range(100):  # a change every 0.1 s for 10 s, the first right after a run
        schedule = schedule.changed(10 + i * 0.1)
    assert schedule.due(TIMING) == pytest.approx(10 + TIMING.max_settle)


def test_failed_runs_are_retried_with_growing_backoff_capped_at_2s_and_success_resets_it():
    schedule = Schedule(next_resync=60)
    delays = []
    for now in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        schedule = schedule.ran(now, ok=False, timing=TIMING)
        delays.append(round(schedule.due(TIMING) - now, 3))
    assert delays == [0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]  # a source that answers again is used within 2 s
    schedule = schedule.ran(8.0, ok=True, timing=TIMING)
    assert schedule.due(TIMING) == 68.0 and schedule.failures == 0


def test_the_loop_coalesces_queued_changes_into_one_run_and_stops_on_request():
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    for _ in range(50):
        events.put(CHANGE)
    runs = []

    def cycle() -> bool:
        runs.append(time.monotonic())
        threading.Timer(0.3, events.put, args=(STOP,)).start()
        return True

    # One run for the fifty, then the one that confirms it a settle window later.
    assert watch.loop(events, cycle, Timing(settle=0.05, resync=60)) == 2
    assert len(runs) == 2 and runs[1] - runs[0] >= 0.05


# --- end to end ---------------------------------------------------------------------------------


@pytest.fixture
def sockets():
    folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # unix socket paths are short
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def cleanup():
    items: list = []
    yield items
    for item in reversed(items):
        item.close()


def started(cleanup: list, item):
    cleanup.append(item)
    return item


def generate(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_rancher_new_container_routes_within_a_second_and_a_burst_reloads_once(tmp_path, sockets, cleanup):
    metadata = started(cleanup, MetadataServer())
    app1 = started(cleanup, App("app1", "127.0.0.11"))
    metadata.set([container("app1", "web", app1.ip, app1.port, name="app1-web-1")], {"aliases": {"app1": ["www"]}})
    port = free_port()
    env = rhgen_env(tmp_path, port, RANCHER_API_HOST=metadata.host, HAPROXY_STATS_SOCKET=str(sockets / "stats.sock"))
    generate(env)
    haproxy = started(cleanup, Haproxy(tmp_path, port).start())
    watcher = started(cleanup, Watch({**env, "RELOAD_COMMAND": haproxy.reload_command}))
    wait_for(lambda: any("value=" in r for r in metadata.paths()), what="the first long poll")
    reloads = haproxy.reloads

    # One new container of a new stack: a new backend, so a reload.
    app2 = started(cleanup, App("app2", "127.0.0.12"))
    metadata.add(container("app2", "web", app2.ip, app2.port, name="app2-web-1"))
    seconds = haproxy.wait_routes("app2.dev.tld", "app2", timeout=5)
    print(f"container appeared -> routable through haproxy: {seconds:.3f} s")
    assert seconds < 2.0  # target 1 s; the margin is for a loaded CI machine
    wait_for(lambda: haproxy.reloads == reloads + 1, what="one reload")

    # Fifty containers starting within 150 ms, each a new metadata version: one run, one reload.
    burst = started(cleanup, App("burst", "127.0.0.13"))
    for i in range(50):
        metadata.add(container("burst", "web", burst.ip, burst.port, name=f"burst-web-{i}"))
        time.sleep(0.003)
    haproxy.wait_routes("burst.dev.tld", "burst", timeout=5)
    wait_for(lambda: (tmp_path / "backends.cfg").read_text().count("server web-") == 52, what="52 servers")
    assert haproxy.reloads == reloads + 2

    def runs_with_52() -> int:
        return sum("burst" in line or "52 servers" in line for line in watcher.out)

    wait_for(lambda: runs_with_52() >= 1, what="the burst's summary line")  # files are written before it is said
    assert runs_with_52() == 1, watcher.out

    # An alias only: the runtime API, no reload.
    metadata.set(metadata=({"aliases": {"app1": ["www"], "app2": ["api"]}}))
    haproxy.wait_routes("api.dev.tld", "app2", timeout=5)
    watcher.wait_out("applied through the runtime API, no reload")
    # The watch runs one change after another: a second, wrong, run for the burst would have come
    # before this one (no sleep needed to give it room): still 2 reloads, and this run the second of 52 servers.
    assert haproxy.reloads == reloads + 2
    assert runs_with_52() == 2

    assert watcher.stop(signal.SIGTERM) == 0
    # 2 reloads whatever the burst's timing; the runtime API took the alias, and also the burst's tail
    # when the run at its first change (the leading edge) read only its start.
    assert re.search(r"watch stopped after \d+ runs: 2 reloads, [12] map updates", watcher.err[-1]), watcher.err[-1]


def test_rancher_errors_keep_the_configuration_and_are_retried(tmp_path, cleanup):
    metadata = started(cleanup, MetadataServer())
    metadata.set([container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")])
    env = rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host)
    watcher = started(cleanup, Watch(env))
    watcher.wait_out("changed:")
    before = (tmp_path / "backends.cfg").read_bytes()

    metadata.fail_status = 500
    metadata.add(container("app2", "web", "127.0.0.12", 8080, name="app2-web-1"))
    wait_for(lambda: any("HTTP 500" in line for line in watcher.err), what="the error")
    assert "the configuration in service stays" in next(line for line in watcher.err if "HTTP 500" in line)
    assert (tmp_path / "backends.cfg").read_bytes() == before
    assert watcher.process.poll() is None

    metadata.fail_status = None  # no new version: the retry alone must bring the change
    watcher.wait_out("changed:", count=2, timeout=10)
    assert "backend app2" in (tmp_path / "backends.cfg").read_text()
    assert watcher.stop(signal.SIGINT) == 0


def test_resync_catches_a_change_the_version_never_announced(tmp_path, cleanup):
    metadata = started(cleanup, MetadataServer())
    metadata.max_hold = 0  # a service that ignores wait=true: answers at once, unchanged
    metadata.set([container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")])
    env = rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host, RHGEN_RESYNC="0.5")
    watcher = started(cleanup, Watch(env))
    watcher.wait_out("changed:")
    metadata.set([container("app2", "web", "127.0.0.12", 8080, name="app2-web-1")], bump=False)
    watcher.wait_out("changed:", count=2, timeout=5)
    polls = [r for r in metadata.paths() if "/version" in r]
    assert len(polls) < 8  # an unchanged answer that came back at once waits a second before the next poll
    assert watcher.stop() == 0


def test_file_source_is_watched(tmp_path, cleanup):
    answers = tmp_path / "answers.yml"
    answers.write_text(json.dumps({"containers": [container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")]}))
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="file", METADATA_FILE=str(answers), RHGEN_SETTLE="0.05")
    watcher = started(cleanup, Watch(env))
    watcher.wait_out("changed:")
    assert "watching the file source" in watcher.err[0]

    # Replaced by rename, as editors and config management do.
    staged = tmp_path / "answers.new"
    staged.write_text(json.dumps({"containers": [container("app2", "web", "127.0.0.12", 8080, name="app2-web-1")]}))
    staged.rename(answers)
    watcher.wait_out("changed:", count=2, timeout=5)
    assert "app2.dev.tld app2" in (tmp_path / "domain.map").read_text()

    answers.write_text("containers: [")  # broken YAML: an error, the files stay
    wait_for(lambda: any("neither JSON nor YAML" in line for line in watcher.err), timeout=5, what="the error")
    assert "app2.dev.tld app2" in (tmp_path / "domain.map").read_text()
    assert watcher.stop(signal.SIGINT) == 0


# --- recovery after source faults -------------------------------------------------------------

OUTAGE = 9.0  # long enough for an uncapped backoff to reach 8 s (0.5 + 1 + 2 + 4 + 8)


def _outage(metadata: MetadataServer, fault: str) -> None:
    if fault == "refused":
        metadata.close()
    elif fault == "HTTP 500":
        metadata.fail_status = 500
    else:
        metadata.html_status = 502


def _recover(metadata: MetadataServer, fault: str, cleanup: list, containers: list, serial: int) -> MetadataServer:
    if fault == "refused":  # the service comes back on its port, at the given version
        metadata = started(cleanup, MetadataServer(port=metadata.port))
        metadata._serial = serial
        metadata.set(containers, bump=False)
    else:
        metadata.fail_status = metadata.html_status = None
    return metadata


@pytest.mark.parametrize("fault", ["refused", "HTTP 500", "HTML pages"])
def test_rancher_recovery_after_an_outage_is_used_within_2s(fault, tmp_path, cleanup, reliability):
    """Issue 17: after 20 s of faults the watch took ~12 s to notice the source answering again."""
    metadata = started(cleanup, MetadataServer())
    app1 = container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")
    app2 = container("app2", "web", "127.0.0.12", 8080, name="app2-web-1")
    metadata.set([app1])
    watcher = started(cleanup, Watch(rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host)))
    watcher.wait_out("changed:")
    wait_for(lambda: any("value=" in r for r in metadata.paths()), what="the first long poll")

    _outage(metadata, fault)
    metadata.add(app2)  # the change made during the outage
    time.sleep(OUTAGE)
    assert "backend app2" not in (tmp_path / "backends.cfg").read_text()
    recovered = time.monotonic()
    _recover(metadata, fault, cleanup, [app1, app2], metadata._serial)
    watcher.wait_out("changed:", count=2, timeout=30)
    seconds = time.monotonic() - recovered
    print(f"{fault}: source answering again -> change applied: {seconds:.2f} s")
    assert "backend app2" in (tmp_path / "backends.cfg").read_text()
    assert seconds < 4.0  # target 2 s; the margin is for a loaded machine
    assert watcher.stop() == 0
    reliability("Faults of the source", f"rhgen watch: {OUTAGE:.0f} s of {fault}, then recovery", held=(
        f"configuration in service kept; the change made meanwhile applied {seconds:.1f} s after recovery (< 4 s)"))


def test_rancher_change_soon_after_an_unchanged_recovery_converges_normally(tmp_path, cleanup, reliability):
    """Issue 17: a change made 2 s after the service came back (unchanged) took 9.9 s to apply."""
    metadata = started(cleanup, MetadataServer())
    app1 = container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")
    metadata.set([app1])
    watcher = started(cleanup, Watch(rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host)))
    watcher.wait_out("changed:")
    wait_for(lambda: any("value=" in r for r in metadata.paths()), what="the first long poll")

    _outage(metadata, "refused")
    time.sleep(OUTAGE)
    metadata = _recover(metadata, "refused", cleanup, [app1], metadata._serial)
    noticed = time.monotonic()
    wait_for(lambda: any("answering again" in line for line in watcher.err), timeout=10, what="the recovery")
    recovery = time.monotonic() - noticed
    time.sleep(2)
    changed = time.monotonic()
    metadata.add(container("app2", "web", "127.0.0.12", 8080, name="app2-web-1"))
    watcher.wait_out("changed:", count=2, timeout=30)
    seconds = time.monotonic() - changed
    print(f"recovery noticed after {recovery:.2f} s; change 2 s later applied in {seconds:.2f} s")
    assert recovery < 4.0 and seconds < 2.0  # targets 2 s and the normal convergence (< 1 s)
    assert watcher.stop() == 0
    reliability("Faults of the source", f"rhgen watch: {OUTAGE:.0f} s refused, unchanged recovery, a change 2 s later",
                held=f"recovery noticed in {recovery:.1f} s, the change applied in {seconds:.1f} s")


def test_html_answer_on_version_is_a_fault_not_a_version(tmp_path, cleanup):
    metadata = started(cleanup, MetadataServer())
    metadata.set([container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")])
    metadata.html_status = 200  # a captive portal or proxy page, with status 200
    watcher = started(cleanup, Watch(rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host), "-v"))
    wait_for(lambda: any("is not a version string (starts with '<html>" in line for line in watcher.err),
             what=f"the fault in {watcher.err}")
    assert not any("metadata version None -> <html>" in line for line in watcher.err)
    assert watcher.stop() == 0
