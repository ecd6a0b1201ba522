"""HAPROXY_STATS_SOCKET: a change to the host map only goes through HAProxy's runtime API, no reload.

Drives the real haproxy in master-worker mode; the master's reload counter and the worker
PIDs (`show proc` on the master socket) prove whether a reload happened.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import container
from tests.support.net import free_port, unix_command
from tests.support.rhgen import rhgen_env, Watch


class Setup:
    """Two stacks (app1, app2) with one app each, a file source, haproxy with a stats socket."""

    def __init__(self, folder: Path, sockets: Path):
        self.folder = folder
        self.port = free_port()
        self.apps = {"app1": App("app1", "127.0.0.11"), "app2": App("app2", "127.0.0.12")}
        self.metadata_file = folder / "metadata.json"
        self.aliases: dict[str, list[str]] = {"app1": ["www"]}
        self.extra: list[dict] = []
        self.env = rhgen_env(
            folder, self.port, RHGEN_SOURCE="file", METADATA_FILE=str(self.metadata_file),
            HAPROXY_STATS_SOCKET=str(sockets / "stats.sock"),
        )
        self.write()
        first = self.generate()
        assert first.returncode == 0, first.stderr
        self.haproxy = Haproxy(folder, self.port).start()
        self.env["RELOAD_COMMAND"] = self.haproxy.reload_command

    def write(self) -> None:
        containers = [container(s, "web", app.ip, app.port, name=f"{s}-web-1") for s, app in self.apps.items()] + self.extra
        self.metadata_file.write_text(json.dumps({"containers": containers, "self_service_metadata": {"aliases": self.aliases}}))

    def generate(self, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rhgen", "generate", "-v"], env={**self.env, **env},
                              capture_output=True, text=True, timeout=30)

    def change(self, **env: str) -> str:
        self.write()
        result = self.generate(**env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def close(self) -> None:
        self.haproxy.close()
        for app in self.apps.values():
            app.close()


@pytest.fixture
def setup(tmp_path):
    sockets = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    setup = Setup(tmp_path, sockets)
    yield setup
    setup.close()
    shutil.rmtree(sockets, ignore_errors=True)


def test_alias_changes_apply_without_a_reload(setup):
    haproxy = setup.haproxy
    before = haproxy.processes()
    assert haproxy.get("www.dev.tld") == (200, "app1")
    assert haproxy.get("api.dev.tld")[0] == 503

    setup.aliases = {"app1": ["www"], "app2": ["api"]}  # a new alias
    assert "applied through the runtime API, no reload" in setup.change()
    assert haproxy.get("api.dev.tld") == (200, "app2")

    setup.aliases = {"app2": ["www", "api"]}  # a host moves to another existing backend
    setup.change()
    assert haproxy.get("www.dev.tld") == (200, "app2")

    setup.aliases = {"app2": ["api"]}  # a host removed
    setup.change()
    assert haproxy.get("www.dev.tld")[0] == 503
    assert haproxy.get("api.dev.tld") == (200, "app2")

    assert haproxy.processes() == before  # same reload counter, same worker
    # The file on disk says the same, so a later reload keeps it.
    assert (setup.folder / "domain.map").read_text().splitlines()[2:] == [
        "api.dev.tld app2", "app1.dev.tld app1", "app2.dev.tld app2"]


def test_a_new_backend_still_reloads(setup):
    haproxy = setup.haproxy
    reloads, workers = haproxy.processes()
    setup.apps["app3"] = App("app3", "127.0.0.13")
    out = setup.change()
    assert "; reloaded" in out and "runtime API" not in out
    haproxy.wait_routes("app3.dev.tld", "app3")
    assert haproxy.reloads == reloads + 1
    assert haproxy.processes()[1] != workers


def test_a_failing_runtime_api_falls_back_to_a_reload(setup, tmp_path):
    reloads = setup.haproxy.reloads
    setup.aliases = {"app1": ["www"], "app2": ["api"]}
    # The socket named in the settings is not the one haproxy listens on: the runtime update
    # fails, so the change must arrive by a reload. (The rendered haproxy.cfg would change too,
    # so only the map differs when both runs agree on the path: point the runtime client elsewhere.)
    setup.write()
    result = setup.generate(HAPROXY_STATS_SOCKET=str(tmp_path / "elsewhere.sock"))
    assert result.returncode == 0, result.stderr
    assert "; reloaded" in result.stdout
    setup.haproxy.wait_routes("api.dev.tld", "app2")
    assert setup.haproxy.reloads == reloads + 1


def test_without_the_socket_setting_map_changes_reload(setup):
    reloads = setup.haproxy.reloads
    setup.aliases = {"app1": ["www"], "app2": ["api"]}
    out = setup.change(HAPROXY_STATS_SOCKET="")
    assert "; reloaded" in out
    setup.haproxy.wait_routes("api.dev.tld", "app2")
    assert setup.haproxy.reloads == reloads + 1


def test_the_socket_line_is_rendered_only_when_set(setup, tmp_path):
    config = (setup.folder / "haproxy.cfg").read_text()
    assert f"stats socket {setup.env['HAPROXY_STATS_SOCKET']} mode 600 level admin" in config
    env = {**setup.env, "HAPROXY_CONFIG": str(tmp_path / "other.cfg"), "HAPROXY_STATS_SOCKET": ""}
    result = subprocess.run([sys.executable, "-m", "rhgen", "generate", "--dry-run"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "stats socket" not in result.stdout


def test_a_map_larger_than_haproxys_buffer_goes_in_chunks(setup):
    reloads = setup.haproxy.reloads
    setup.aliases = {"app1": ["www"], "app2": [f"alias{i:04d}" for i in range(2000)]}  # ~50 kB of map
    assert "applied through the runtime API, no reload" in setup.change()
    assert setup.haproxy.get("alias1999.dev.tld") == (200, "app2")
    assert setup.haproxy.get("alias0000.dev.tld") == (200, "app2")
    assert setup.haproxy.reloads == reloads


def test_watch_repairs_a_live_map_that_drifted_from_the_file(setup):
    # As if a runtime update had reached a worker on its way out: the live map lost a host.
    stats, map_file = setup.env["HAPROXY_STATS_SOCKET"], str(setup.folder / "domain.map")
    assert unix_command(stats, f"del map {map_file} www.dev.tld").strip() == ""
    assert setup.haproxy.get("www.dev.tld")[0] == 503
    reloads = setup.haproxy.reloads
    watcher = Watch({**setup.env, "RHGEN_RESYNC": "0.2"})
    try:
        setup.haproxy.wait_routes("www.dev.tld", "app1", timeout=5)
        time.sleep(0.8)  # several more resyncs (every 0.2 s): an equal map is left alone
        assert sum("live host map differed" in line for line in watcher.err) == 1, watcher.err
        assert setup.haproxy.reloads == reloads
    finally:
        assert watcher.stop() == 0
    # Unchanged runs print nothing: the count at the stop shows those resyncs really ran (so the
    # single "differed" line above is not the result of a watch that was merely slow).
    runs = int(re.search(r"watch stopped after (\d+) runs", watcher.err[-1]).group(1))
    assert runs >= 4, watcher.err[-1]
