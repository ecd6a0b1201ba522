"""HAPROXY_STATS_SOCKET: servers added to or removed from an existing backend go through HAProxy's
runtime API (add server / drain, maint, del server), no reload; a new backend still reloads once.

Real haproxy in master-worker mode (its reload counter proves whether a reload happened), the
Rancher metadata look-alike, real HTTP apps on 127.0.0.x, rhgen generate as a subprocess."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.apps import App
from tests.support.haproxy import Haproxy
from tests.support.metadata import container, MetadataServer
from tests.support.net import free_port, unix_command, wait_for
from tests.support.rhgen import Watch, rhgen_env


class Stack:
    """Stack app1 with apps on 127.0.0.11.., rhgen with the stats socket, haproxy serving it."""

    def __init__(self, folder: Path, sockets: Path, servers: int = 1, **env: str):
        self.folder = folder
        self.metadata = MetadataServer()
        self.apps: list[App] = []
        self.stats = str(sockets / "stats.sock")
        port = free_port()
        self.env = rhgen_env(folder, port, RANCHER_API_HOST=self.metadata.host, HAPROXY_STATS_SOCKET=self.stats,
                             RHGEN_CHECK_INTERVAL="200", **env)
        for _ in range(servers):
            self.start_app()
        self.publish()
        first = self.generate()
        assert first.returncode == 0, first.stderr
        self.haproxy = Haproxy(folder, port).start()
        self.env["RELOAD_COMMAND"] = self.haproxy.reload_command

    def start_app(self, stack: str = "app1") -> App:
        index = len(self.apps) + 1
        app = App(f"{stack}-{index}", f"127.0.0.{10 + index}")
        app.stack = stack
        app.uuid = f"{index:08x}-0000-4000-8000-000000000000"  # the servers' order is the apps' order
        self.apps.append(app)
        return app

    def publish(self) -> None:
        self.metadata.set([container(app.stack, "web", app.ip, app.port, name=app.name, uuid=app.uuid) for app in self.apps])

    def generate(self) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rhgen", "generate", "-v"], env=self.env,
                              capture_output=True, text=True, timeout=60)

    def change(self) -> str:
        self.publish()
        result = self.generate()
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    def live_servers(self, backend: str = "app1") -> list[tuple[str, str, int]]:
        """(server, address, admin state) of `backend` from `show servers state`."""
        found = []
        for line in unix_command(self.stats, f"show servers state {backend}").splitlines():
            fields = line.split()
            if len(fields) > 6 and fields[0].isdigit():
                found.append((fields[3], fields[4], int(fields[6])))
        return sorted(found)

    def close(self) -> None:
        self.haproxy.close()
        self.metadata.close()
        for app in self.apps:
            app.close()


@pytest.fixture
def stack_factory(tmp_path, socket_dir):
    sockets = Path(socket_dir)
    made: list[Stack] = []

    def make(servers: int = 1, **env: str) -> Stack:
        made.append(Stack(tmp_path, sockets, servers, **env))
        return made[-1]

    yield make
    for stack in made:
        stack.close()


def test_a_server_added_to_an_existing_backend_serves_without_a_reload(stack_factory):
    stack = stack_factory(servers=1)
    before = stack.haproxy.processes()
    new = stack.start_app()
    out = stack.change()
    assert "1 server(s) added, 0 removed through the runtime API, no reload" in out, out
    stack.haproxy.wait_routes("app1.dev.tld", new.name, timeout=5)
    assert stack.haproxy.processes() == before  # same reload counter, same worker
    assert [ip for _, ip, admin in stack.live_servers() if admin == 0] == ["127.0.0.11", "127.0.0.12"]
    # backends.cfg says the same, so a reload keeps the server.
    assert f"{new.ip}:{new.port} check" in (stack.folder / "backends.cfg").read_text()
    stack.haproxy.master("reload")
    stack.haproxy.wait_routes("app1.dev.tld", new.name, timeout=5)


def test_a_removed_server_drains_its_requests_then_goes_without_a_reload(stack_factory, reliability):
    stack = stack_factory(servers=2)
    reloads = stack.haproxy.reloads
    leaving = stack.apps[1]
    # Two slow (3 s) requests in flight: round robin puts one on each server. Long enough that the
    # drain lasts well over a second even when a loaded machine starts `rhgen generate` slowly.
    slow: list[tuple[int, str]] = []
    threads = [threading.Thread(target=lambda: slow.append(stack.haproxy.get("app1.dev.tld", "/slow/3"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: all("/slow/3" in app.paths for app in stack.apps), what="a slow request at each server")
    stack.apps.remove(leaving)
    stack.metadata.set([container(app.stack, "web", app.ip, app.port, name=app.name, uuid=app.uuid) for app in stack.apps])
    during: list[tuple[int, str]] = []
    done = threading.Event()

    def keep_asking() -> None:  # new requests from the moment the server drains
        while not done.is_set() and not any(ip == leaving.ip and admin & 0x08 for _, ip, admin in stack.live_servers()):
            time.sleep(0.01)
        while not done.is_set():
            during.append(stack.haproxy.get("app1.dev.tld"))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    started = time.monotonic()
    result = stack.generate()
    took = time.monotonic() - started
    done.set()
    asker.join(5)
    for thread in threads:
        thread.join(5)
    assert result.returncode == 0, result.stderr
    assert "0 server(s) added, 1 removed through the runtime API, no reload" in result.stderr, result.stderr
    assert sorted(slow) == [(200, "app1-1"), (200, "app1-2")]  # the drained server finished its request
    assert 0.8 < took < 9  # it waited for that request, not for the drain timeout (10 s)
    assert during and set(during) == {(200, "app1-1")}  # no new request reached the drained server
    assert stack.haproxy.reloads == reloads
    assert [ip for _, ip, _ in stack.live_servers()] == ["127.0.0.11"]
    leaving.close()
    reliability("Faults of the backends", "a server leaves with a request in flight",
                held="its request finished, no new request reached it, deleted without a reload")


def test_watch_routes_a_new_server_while_a_removed_one_still_drains_its_request(stack_factory):
    # The drain of a server that left must not hold back the next change: a container started while
    # another one drains a slow request is routed at once, not after that request.
    stack = stack_factory(servers=2, RHGEN_SETTLE="0.05")
    reloads = stack.haproxy.reloads
    watch = Watch(stack.env, "-v")
    try:
        watch.wait_err("run: done", timeout=15)  # the watch's first run
        leaving = stack.apps[1]
        slow: list[tuple[int, str]] = []
        threads = [threading.Thread(target=lambda: slow.append(stack.haproxy.get("app1.dev.tld", "/slow/4")))
                   for _ in range(2)]  # round robin: one on each server
        for thread in threads:
            thread.start()
        wait_for(lambda: all("/slow/4" in app.paths for app in stack.apps), what="a slow request at each server")
        staying = stack.apps[0]
        stack.metadata.set([container("app1", "web", staying.ip, staying.port, name=staying.name, uuid=staying.uuid)])
        watch.wait_err("0 server(s) added, 1 removed through the runtime API", timeout=10)
        arrived = stack.start_app()  # app1-3 on 127.0.0.13: a container of its own, not the leaving one back
        stack.apps.remove(leaving)
        stack.publish()
        stack.haproxy.wait_routes("app1.dev.tld", arrived.name, timeout=3)
        assert len(slow) < 2, slow  # the drained server's 4 s request is still in flight
        assert any(ip == leaving.ip and admin & 0x08 for _, ip, admin in stack.live_servers()), stack.live_servers()
        for thread in threads:
            thread.join(10)
        assert sorted(slow) == [(200, "app1-1"), (200, "app1-2")]  # it finished its request all the same
        wait_for(lambda: leaving.ip not in [ip for _, ip, _ in stack.live_servers()], timeout=5, what="deleted")
        assert sorted(ip for _, ip, admin in stack.live_servers() if admin == 0) == ["127.0.0.11", arrived.ip]
        assert stack.haproxy.reloads == reloads
    finally:
        assert watch.stop() == 0, watch.err
    leaving.close()


def test_a_reload_during_a_background_drain_ends_it_quietly(stack_factory):
    # A reload while a removed server still drains: the new worker never had that server, so the
    # drain's `set server`/`del server` find nothing; that ends the drain, with no warning, and the
    # old worker still finishes the request it had.
    stack = stack_factory(servers=2, RHGEN_SETTLE="0.05")
    watch = Watch(stack.env, "-v")
    try:
        watch.wait_err("run: done", timeout=15)  # the watch's first run
        slow: list[tuple[int, str]] = []
        threads = [threading.Thread(target=lambda: slow.append(stack.haproxy.get("app1.dev.tld", "/slow/3")))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        wait_for(lambda: all("/slow/3" in app.paths for app in stack.apps), what="a slow request at each server")
        leaving = stack.apps.pop()
        stack.publish()
        watch.wait_err("0 server(s) added, 1 removed through the runtime API", timeout=10)
        reloads = stack.haproxy.reloads
        stack.haproxy.master("reload")
        wait_for(lambda: stack.haproxy.reloads == reloads + 1, timeout=10, what="the reload")
        for thread in threads:
            thread.join(10)
        assert sorted(slow) == [(200, "app1-1"), (200, "app1-2")]  # the old worker finished both
        assert [ip for _, ip, _ in stack.live_servers()] == ["127.0.0.11"]
    finally:
        assert watch.stop() == 0, watch.err
    assert not [line for line in watch.err if "warning" in line or "Traceback" in line], watch.err
    leaving.close()


def test_the_drain_wait_is_bounded_by_the_drain_timeout(stack_factory):
    stack = stack_factory(servers=2, RHGEN_DRAIN_TIMEOUT="0.3")
    slow: list[object] = []

    def ask() -> None:
        try:
            slow.append(stack.haproxy.get("app1.dev.tld", "/slow/4"))
        except Exception as exc:  # noqa: BLE001 - the shut session is the expected outcome
            slow.append(type(exc).__name__)

    requests = [threading.Thread(target=ask) for _ in range(2)]  # one on each server
    for thread in requests:
        thread.start()
    wait_for(lambda: all("/slow/4" in app.paths for app in stack.apps), what="a slow request at each server")
    stack.apps.pop(0).close()  # app1-1 leaves with its 4 s request in flight (the client waits 5 s)
    started = time.monotonic()
    out = stack.change()
    took = time.monotonic() - started
    for thread in requests:
        thread.join(10)
    assert "1 removed through the runtime API" in out
    assert took < 3  # did not wait out the 4 s request
    # Its session was shut after the drain timeout; the other server's request finished.
    assert (200, "app1-2") in slow and len(slow) == 2 and slow.count((200, "app1-2")) == 1, slow


def test_a_new_backend_with_server_changes_reloads_once(stack_factory):
    stack = stack_factory(servers=1)
    reloads = stack.haproxy.reloads
    stack.start_app()
    other = stack.start_app("app2")
    out = stack.change()
    assert "; reloaded" in out and "runtime API" not in out, out
    stack.haproxy.wait_routes("app2.dev.tld", other.name, timeout=5)
    assert stack.haproxy.reloads == reloads + 1


def test_a_runtime_command_haproxy_refuses_falls_back_to_one_reload(stack_factory, tmp_path, reliability):
    # static-rr cannot take dynamic servers: `add server` fails, the reload brings the server in.
    templates = tmp_path / "templates"
    templates.mkdir()
    bundled = Path(__file__).resolve().parent.parent / "templates" / "backends.cfg.j2"
    (templates / "backends.cfg.j2").write_text(bundled.read_text().replace("balance roundrobin", "balance static-rr"))
    stack = stack_factory(servers=1, RHGEN_TEMPLATE_DIR=str(templates))
    reloads = stack.haproxy.reloads
    new = stack.start_app()
    out = stack.change()
    assert "add server app1/" in out and "; reloading instead" in out and "; reloaded" in out, out
    stack.haproxy.wait_routes("app1.dev.tld", new.name, timeout=5)
    assert stack.haproxy.reloads == reloads + 1
    reliability("Faults of the backends", "haproxy refuses a runtime command (add server)",
                held="one warning line, one checked reload, the server serves")
