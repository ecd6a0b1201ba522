"""The single-container layout, end to end: entrypoint.sh with a real metadata service, real
haproxy and real backends on 127.0.0.x, a 1-second schedule (the plain loop: no supercronic)."""

from __future__ import annotations

import json
import http.client
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support.apps import App
from tests.support.haproxy import current_worker, master_pid, master_reloads
from tests.support.metadata import container, MetadataServer
from tests.support.net import closing_all, free_port, get, routes_to, wait_for
from tests.support.rhgen import ENTRYPOINT, RELOAD_HELPER, entrypoint_env

PERIOD = 1.0
# One period, plus a run of `rhgen generate` (~0.4 s), the reload and a margin for a busy CI box.
FOLLOW = PERIOD + 3.0


@pytest.fixture
def world(tmp_path, socket_dir):
    """Backends app1 (two servers) and app2, a metadata service routing app1, an environment."""
    ports = {name: free_port(ip) for name, ip in (("app1-1", "127.0.0.11"), ("app1-2", "127.0.0.12"), ("app2", "127.0.0.21"))}
    metadata = MetadataServer(containers=[
        container("app1", "web", "127.0.0.11", ports["app1-1"], name="app1-web-1"),
        container("app1", "web", "127.0.0.12", ports["app1-2"], name="app1-web-2"),
    ])
    started = [
        App("app1\n", "127.0.0.11", ports["app1-1"]),
        App("app1\n", "127.0.0.12", ports["app1-2"]),
        App("app2\n", "127.0.0.21", ports["app2"]),
        metadata,
    ]
    http_port = free_port()
    env = entrypoint_env(tmp_path, socket_dir, http_port, RANCHER_API_HOST=metadata.host)
    with closing_all(*started):
        yield type("World", (), {"metadata": metadata, "apps": started[:3], "ports": ports, "env": env, "http_port": http_port,
                                 "socket": env["HAPROXY_MASTER_SOCKET"], "folder": tmp_path})


def start(procs, env, name="entrypoint"):
    return procs.spawn(["bash", str(ENTRYPOINT)], env, name)


def test_entrypoint_serves_and_routing_follows_new_stacks_and_aliases(procs, world):
    proc = start(procs, world.env)
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed after start")
    assert get(world.http_port, "unknown.dev.tld")[0] == 503
    wait_for(lambda: "running 'rhgen generate' every 1 s in a plain loop" in proc.log(), 5,
               what="the fallback said once")
    assert proc.log().count("supercronic not found") == 1

    # A new stack is deployed.
    world.metadata.containers.append(container("app2", "web", "127.0.0.21", world.ports["app2"], name="app2-web-1"))
    wait_for(routes_to(world.http_port, "app2.dev.tld", "app2\n"), FOLLOW, what="new stack routed")  # the bound is the check

    # Only the proxy's own metadata changes: an alias, so only domain.map differs.
    before = Path(world.env["HAPROXY_BACKEND_CONFIG"]).read_bytes()
    world.metadata.service_metadata = {"aliases": {"app2": ["www"]}}
    wait_for(routes_to(world.http_port, "www.dev.tld", "app2\n"), FOLLOW, what="alias-only change routed")
    assert Path(world.env["HAPROXY_BACKEND_CONFIG"]).read_bytes() == before

    # The stack goes away again: its host falls back to 503.
    world.metadata.containers.pop()
    wait_for(lambda: get(world.http_port, "app2.dev.tld")[0] == 503, FOLLOW, what="removed stack unrouted")
    assert proc.popen.poll() is None
    reloads, failed = master_reloads(world.socket)
    assert reloads >= 3 and failed == 0


def test_waits_for_the_metadata_service_and_never_runs_haproxy_without_a_config(procs, tmp_path, socket_dir):
    backend_port, metadata_port, http_port = free_port("127.0.0.11"), free_port(), free_port()
    containers = [container("app1", "web", "127.0.0.11", backend_port, name="app1-web-1")]
    env = entrypoint_env(tmp_path, socket_dir, http_port, RANCHER_API_HOST=f"127.0.0.1:{metadata_port}")
    proc = start(procs, env)

    # Nothing answers the metadata requests yet: retries, no haproxy, no listener, no config.
    wait_for(lambda: proc.log().count("retrying in") >= 2, 10, what="two retries")
    assert not [p for p in procs.leftovers() if " haproxy " in f" {p.split(' ', 1)[1]} "]
    with pytest.raises(OSError):
        get(http_port, "app1.dev.tld", timeout=0.5)
    assert not Path(env["HAPROXY_CONFIG"]).exists()

    with closing_all(App("app1\n", "127.0.0.11", backend_port), MetadataServer(port=metadata_port, containers=containers)):
        wait_for(routes_to(http_port, "app1.dev.tld", "app1\n"), 10, what="routed once metadata answers")
        assert proc.popen.poll() is None


def test_metadata_that_haproxy_rejects_keeps_the_old_configuration_serving(procs, world, tmp_path):
    # A user's backends template that also writes the container name into a `cookie`: fine for
    # ordinary names, broken config for a name holding a space (names are free text in metadata).
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "backends.cfg.j2").write_text(
        "{% for backend in routing.backends %}\n"
        "backend {{ backend.name }}\n"
        "    cookie SRV insert indirect nocache\n"
        "{% for server in backend.servers %}\n"
        "    server {{ server.name }} {{ server.address }}:{{ server.port }} cookie {{ server.container }}\n"
        "{% endfor %}\n"
        "{% endfor %}\n"
    )
    proc = start(procs, {**world.env, "RHGEN_TEMPLATE_DIR": str(templates)})
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")
    worker = current_worker(world.socket)
    live = Path(world.env["HAPROXY_BACKEND_CONFIG"]).read_bytes()

    world.metadata.containers.append(container("app2", "web", "127.0.0.21", world.ports["app2"], name="app2 web 1"))
    rejected = "haproxy -c rejected the new configuration"
    wait_for(lambda: rejected in proc.log(), FOLLOW, what="rejection logged")
    wait_for(lambda: proc.log().count(rejected) >= 2, FOLLOW, what="another run of the schedule, rejected again")
    assert get(world.http_port, "app1.dev.tld") == (200, "app1\n")
    assert get(world.http_port, "app2.dev.tld")[0] == 503
    assert Path(world.env["HAPROXY_BACKEND_CONFIG"]).read_bytes() == live
    assert current_worker(world.socket) == worker, "no reload happened"
    assert proc.popen.poll() is None

    world.metadata.containers[-1]["name"] = "app2-web-1"
    wait_for(routes_to(world.http_port, "app2.dev.tld", "app2\n"), FOLLOW, what="fixed metadata routed")


def test_sigterm_lets_a_request_in_flight_finish_and_leaves_no_process(procs, world):
    proc = start(procs, world.env)
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")

    answer = {}

    def slow_request():
        try:
            answer["result"] = get(world.http_port, "app1.dev.tld", "/slow", timeout=10)
        except OSError as exc:
            answer["result"] = exc

    client = threading.Thread(target=slow_request)
    client.start()
    wait_for(lambda: any("/slow" in app.paths for app in world.apps), 5, what="the request at the backend")
    started = time.monotonic()
    assert proc.terminate_and_wait(timeout=20) == 0
    client.join(5)
    assert answer["result"] == (200, "app1\n")
    assert time.monotonic() - started < 10
    assert procs.leftovers() == []
    with pytest.raises(OSError):
        get(world.http_port, "app1.dev.tld", timeout=0.5)
    assert "received SIGTERM, stopping" in proc.log()
    assert "haproxy exited with status 0" in proc.log()


def test_sigint_stops_it_as_well(procs, world):
    proc = start(procs, world.env)
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(timeout=20) == 0
    assert procs.leftovers() == []


def _children(pid: int) -> dict[int, tuple[str, str]]:
    """pid -> (command, state) of each child; a child that vanished meanwhile is left out."""
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            continue
        command, rest = stat.split("(", 1)[1].rsplit(")", 1)
        found[int(child)] = (command, rest.split()[0])
    return found


def _zombie_children(pid: int) -> set[int]:
    return {child for child, (_, state) in _children(pid).items() if state == "Z"}


def _sleeping_orphans(pid: int) -> set[int]:
    return {child for child, (command, state) in _children(pid).items() if command == "sleep" and state != "Z"}


def test_as_pid_1_of_a_container_it_reaps_orphans_and_stops_on_sigterm(procs, world, tmp_path):
    # As in a container: the entrypoint is PID 1 of its own PID namespace, where every orphan
    # (here one per reload, left by the reload command's shell) becomes its child.
    env = {**world.env, "RELOAD_COMMAND": "sh -c 'sleep 0.1 & exec rhgen reload'"}
    proc = procs.spawn(["unshare", "--pid", "--fork", "--kill-child", "bash", str(ENTRYPOINT)], env, "pid1")
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")
    pid1 = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
    ns_pids = next(line for line in Path(f"/proc/{pid1}/status").read_text().splitlines() if line.startswith("NSpid:"))
    assert ns_pids.split()[-1] == "1"

    for i in range(3):  # a few changed runs, each reload leaving an orphan that ends 0.1 s later
        reloads = master_reloads(world.socket)[0]
        world.metadata.service_metadata = {"aliases": {"app1": [f"orphan{i}"]}}
        wait_for(lambda: master_reloads(world.socket)[0] > reloads, FOLLOW, what="a reload")
    # Each orphan (`sleep 0.1`) ends soon after its reload; once none runs, whatever is a zombie
    # must be reaped soon after.
    wait_for(lambda: not _sleeping_orphans(pid1), 5, what="the orphans ended")
    first = _zombie_children(pid1)
    wait_for(lambda: not first & _zombie_children(pid1), 5, what="the orphans reaped")

    os.kill(pid1, signal.SIGTERM)
    assert proc.popen.wait(timeout=20) == 0
    assert "haproxy exited with status 0" in proc.log()
    assert procs.leftovers() == []


def test_haproxy_dying_stops_the_container_with_a_failure(procs, world):
    proc = start(procs, world.env)
    wait_for(lambda: "in a plain loop" in proc.log(), 15, what="haproxy and the schedule running")
    os.kill(master_pid(world.socket), signal.SIGKILL)
    assert proc.popen.wait(timeout=10) != 0
    assert "haproxy exited with status 137; stopping" in proc.log()
    wait_for(lambda: procs.leftovers() == [], 5, what="workers and schedule gone")


# --- load across reloads ---------------------------------------------------------------------

CLIENTS = 6  # half keep-alive, half a new connection per request
REQUESTS_PER_CLIENT = 3000  # upper bound; the clients stop when the reloads are done
RELOADS = 20


def _client(port: int, keep_alive: bool, stop: threading.Event, counts: dict, lock: threading.Lock) -> None:
    ok = failed = 0
    errors: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    deadline = time.monotonic() + 60
    for _ in range(REQUESTS_PER_CLIENT):
        if stop.is_set() or time.monotonic() > deadline:
            break
        try:
            if not keep_alive:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/", headers={"Host": "app1.dev.tld"})
            response = conn.getresponse()
            body = response.read()
            if response.status == 200 and body == b"app1\n":
                ok += 1
            else:
                failed += 1
                errors.append(f"HTTP {response.status}")
            if not keep_alive:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            failed += 1
            errors.append(repr(exc))
            conn.close()
    conn.close()
    with lock:
        counts["ok"] += ok
        counts["failed"] += failed
        counts["errors"].extend(errors[:5])


def test_no_request_fails_across_twenty_reloads_under_load(procs, world):
    # The schedule is slowed down: this test triggers every change itself, as the schedule would.
    env = {**world.env, "RHGEN_INTERVAL": "3600"}
    proc = start(procs, env)
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed")
    reloads_before, _ = master_reloads(world.socket)

    counts = {"ok": 0, "failed": 0, "errors": []}
    lock, stop = threading.Lock(), threading.Event()
    clients = [
        threading.Thread(target=_client, args=(world.http_port, i % 2 == 0, stop, counts, lock)) for i in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    generate_env = {**env, "RELOAD_COMMAND": str(RELOAD_HELPER), "RHGEN_TEST_MARKER": procs.marker}
    try:
        time.sleep(0.3)
        for i in range(RELOADS):
            # An alias-only change each time: domain.map differs, so rhgen swaps it and reloads.
            world.metadata.service_metadata = {"aliases": {"app1": [f"alias{i}"]}}
            result = subprocess.run(["rhgen", "generate"], env=generate_env, capture_output=True, text=True, timeout=30)
            assert result.returncode == 0, result.stderr
            assert "reloaded" in result.stdout
        time.sleep(0.3)
    finally:
        stop.set()
        for client in clients:
            client.join(30)

    reloads_after, failed_reloads = master_reloads(world.socket)
    total = counts["ok"] + counts["failed"]
    print(f"\nload: {total} requests from {CLIENTS} clients across {reloads_after - reloads_before} reloads, "
          f"{counts['failed']} failed")
    assert reloads_after - reloads_before == RELOADS and failed_reloads == 0
    assert counts["failed"] == 0, counts["errors"]
    assert total >= 1000, "too few requests to say anything"
    assert proc.popen.poll() is None


def test_watch_mode_follows_a_new_stack_within_a_second_or_two(procs, world, tmp_path):
    answers = tmp_path / "metadata.json"
    containers = [container("app1", "web", "127.0.0.11", world.ports["app1-1"], name="app1-web-1")]
    answers.write_text(json.dumps({"containers": containers}))
    env = {**world.env, "RHGEN_MODE": "watch", "DISABLE_METADATA": "true", "METADATA_FILE": str(answers)}
    proc = start(procs, env)
    wait_for(routes_to(world.http_port, "app1.dev.tld", "app1\n"), 15, what="app1 routed after start")
    wait_for(lambda: "rhgen watching the file source" in proc.log() or "watching the file source" in proc.log(), 5,
               what="rhgen watch started")
    containers.append(container("app2", "web", "127.0.0.21", world.ports["app2"], name="app2-web-1"))
    answers.write_text(json.dumps({"containers": containers}))
    changed = time.monotonic()
    wait_for(routes_to(world.http_port, "app2.dev.tld", "app2\n"), 5, what="new stack routed in watch mode")
    assert time.monotonic() - changed < 3
    assert "supercronic" not in proc.log()
