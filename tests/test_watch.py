"""`rhgen watch`: the pipeline triggered by change (Rancher long poll, Docker events, file polling).

The end-to-end tests run `rhgen watch` as a process against a real metadata server or a real
file, and (where traffic matters) a real haproxy in master-worker mode that rhgen reloads. Docker
events are followed on the real daemon in test_docker_real.py.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from servers import (
    App,
    Haproxy,
    RancherMetadata,
    Watch,
    free_port,
    rancher_container,
    rhgen_env,
    wait_for,
)

from rhgen import watch
from rhgen.watch import CHANGE, STOP, Schedule, Timing

# --- the debounce rules, without clocks --------------------------------------------------------

TIMING = Timing(settle=0.2, resync=60)


def test_a_burst_runs_once_after_it_went_quiet():
    schedule = Schedule(next_resync=60)
    for i in range(50):  # 50 changes 2 ms apart
        schedule = schedule.changed(10 + i * 0.002)
    assert schedule.due(TIMING) == pytest.approx(10.098 + 0.2)


def test_a_source_that_never_goes_quiet_still_runs_every_few_settle_windows():
    schedule = Schedule(next_resync=60)
    for i in range(100):  # a change every 0.1 s for 10 s
        schedule = schedule.changed(10 + i * 0.1)
    assert schedule.due(TIMING) == pytest.approx(10 + TIMING.max_settle)


def test_failed_runs_are_retried_with_growing_backoff_and_success_resets_it():
    schedule = Schedule(next_resync=60)
    delays = []
    for now in (1.0, 2.0, 3.0, 4.0):
        schedule = schedule.ran(now, ok=False, timing=TIMING)
        delays.append(round(schedule.due(TIMING) - now, 3))
    assert delays == [0.5, 1.0, 2.0, 4.0]
    schedule = schedule.ran(5.0, ok=True, timing=TIMING)
    assert schedule.due(TIMING) == 65.0 and schedule.failures == 0


def test_the_loop_coalesces_queued_changes_into_one_run_and_stops_on_request():
    events: queue.SimpleQueue[str] = queue.SimpleQueue()
    for _ in range(50):
        events.put(CHANGE)
    runs = []

    def cycle() -> bool:
        runs.append(time.monotonic())
        threading.Timer(0.3, events.put, args=(STOP,)).start()
        return True

    assert watch.loop(events, cycle, Timing(settle=0.05, resync=60)) == 1
    assert len(runs) == 1


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
    metadata = started(cleanup, RancherMetadata())
    app1 = started(cleanup, App("app1", "127.0.0.11"))
    metadata.set([rancher_container("app1-web-1", "app1", app1.ip, app1.port)], {"aliases": {"app1": ["www"]}})
    port = free_port()
    env = rhgen_env(tmp_path, port, RANCHER_API_HOST=metadata.host, HAPROXY_STATS_SOCKET=str(sockets / "stats.sock"))
    generate(env)
    haproxy = started(cleanup, Haproxy(tmp_path, port))
    watcher = started(cleanup, Watch({**env, "RELOAD_COMMAND": haproxy.reload_command}))
    wait_for(lambda: any("value=" in r for r in metadata.requests), what="the first long poll")
    reloads = haproxy.reloads

    # One new container of a new stack: a new backend, so a reload.
    app2 = started(cleanup, App("app2", "127.0.0.12"))
    metadata.add(rancher_container("app2-web-1", "app2", app2.ip, app2.port))
    seconds = haproxy.wait_routes("app2.dev.tld", "app2", timeout=5)
    print(f"container appeared -> routable through haproxy: {seconds:.3f} s")
    assert seconds < 2.0  # target 1 s; the margin is for a loaded CI machine
    wait_for(lambda: haproxy.reloads == reloads + 1, what="one reload")

    # Fifty containers starting within 150 ms, each a new metadata version: one run, one reload.
    burst = started(cleanup, App("burst", "127.0.0.13"))
    for i in range(50):
        metadata.add(rancher_container(f"burst-web-{i}", "burst", burst.ip, burst.port))
        time.sleep(0.003)
    haproxy.wait_routes("burst.dev.tld", "burst", timeout=5)
    wait_for(lambda: (tmp_path / "backends.cfg").read_text().count("server web-") == 52, what="52 servers")
    time.sleep(0.5)  # room for a second, wrong, reload
    assert haproxy.reloads == reloads + 2
    assert sum("burst" in line or "52 servers" in line for line in watcher.out) == 1

    # An alias only: the runtime API, no reload.
    metadata.set(metadata=({"aliases": {"app1": ["www"], "app2": ["api"]}}))
    haproxy.wait_routes("api.dev.tld", "app2", timeout=5)
    watcher.wait_out("applied through the runtime API, no reload")
    assert haproxy.reloads == reloads + 2

    assert watcher.stop(signal.SIGTERM) == 0
    assert "watch stopped after" in watcher.err[-1] and "2 reloads, 1 map updates" in watcher.err[-1]


def test_rancher_errors_keep_the_configuration_and_are_retried(tmp_path, cleanup):
    metadata = started(cleanup, RancherMetadata())
    metadata.set([rancher_container("app1-web-1", "app1", "127.0.0.11", 8080)])
    env = rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host)
    watcher = started(cleanup, Watch(env))
    watcher.wait_out("changed:")
    before = (tmp_path / "backends.cfg").read_bytes()

    metadata.fail_status = 500
    metadata.add(rancher_container("app2-web-1", "app2", "127.0.0.12", 8080))
    wait_for(lambda: any("HTTP 500" in line for line in watcher.err), what="the error")
    assert "the configuration in service stays" in next(line for line in watcher.err if "HTTP 500" in line)
    assert (tmp_path / "backends.cfg").read_bytes() == before
    assert watcher.process.poll() is None

    metadata.fail_status = None  # no new version: the retry alone must bring the change
    watcher.wait_out("changed:", count=2, timeout=10)
    assert "backend app2" in (tmp_path / "backends.cfg").read_text()
    assert watcher.stop(signal.SIGINT) == 0


def test_resync_catches_a_change_the_version_never_announced(tmp_path, cleanup):
    metadata = started(cleanup, RancherMetadata())
    metadata.max_hold = 0  # a service that ignores wait=true: answers at once, unchanged
    metadata.set([rancher_container("app1-web-1", "app1", "127.0.0.11", 8080)])
    env = rhgen_env(tmp_path, free_port(), RANCHER_API_HOST=metadata.host, RHGEN_RESYNC="0.5")
    watcher = started(cleanup, Watch(env))
    watcher.wait_out("changed:")
    metadata.set([rancher_container("app2-web-1", "app2", "127.0.0.12", 8080)], bump=False)
    watcher.wait_out("changed:", count=2, timeout=5)
    polls = [r for r in metadata.requests if "/version" in r]
    assert len(polls) < 8  # an unchanged answer that came back at once waits a second before the next poll
    assert watcher.stop() == 0


def test_file_source_is_watched(tmp_path, cleanup):
    answers = tmp_path / "answers.yml"
    answers.write_text(json.dumps({"containers": [rancher_container("app1-web-1", "app1", "127.0.0.11", 8080)]}))
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="file", METADATA_FILE=str(answers), RHGEN_SETTLE="0.05")
    watcher = started(cleanup, Watch(env))
    watcher.wait_out("changed:")
    assert "watching the file source" in watcher.err[0]

    # Replaced by rename, as editors and config management do.
    staged = tmp_path / "answers.new"
    staged.write_text(json.dumps({"containers": [rancher_container("app2-web-1", "app2", "127.0.0.12", 8080)]}))
    staged.rename(answers)
    watcher.wait_out("changed:", count=2, timeout=5)
    assert "app2.dev.tld app2" in (tmp_path / "domain.map").read_text()

    answers.write_text("containers: [")  # broken YAML: an error, the files stay
    wait_for(lambda: any("neither JSON nor YAML" in line for line in watcher.err), timeout=5, what="the error")
    assert "app2.dev.tld app2" in (tmp_path / "domain.map").read_text()
    assert watcher.stop(signal.SIGINT) == 0
