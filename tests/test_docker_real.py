"""RHGEN_SOURCE=docker against the real Docker Engine: containers, networks, health checks and events
made by `docker`, traffic through a real haproxy to the containers' bridge IPs.

The daemon is shared: every test sets RANCHER_LABEL to its lab's own routing label, so rhgen sees
only the containers this test made, and the lab removes them afterwards."""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.rhgen import Watch
from tests.support.docker import BACKEND_IMAGE, docker, SocketRecorder, wait_for

SOCKET = "/var/run/docker.sock"
REPO = Path(__file__).resolve().parent.parent
SOURCE = "Faults of the source"
COMPOSE = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"


@pytest.fixture
def env(target, docker_lab):
    """The target's environment, reading the real daemon and only this lab's containers."""
    return {**target.env, "PATH": os.environ["PATH"], "RHGEN_SOURCE": "docker", "DOCKER_HOST": f"unix://{SOCKET}",
            "RANCHER_LABEL": docker_lab.route_label}


def routes(run_rhgen, env, **extra):
    result = run_rhgen(["routes", "--json"], {**env, **extra})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def generated(run_rhgen, env, **extra):
    result = run_rhgen(["generate"], {**env, **extra})
    assert result.returncode == 0, result.stderr
    return result


def compose(lab, project, service="web", port="80", **labels):
    """The labels docker compose puts on a container of `project`, plus the lab's routing label."""
    return {COMPOSE: project, SERVICE: service, lab.route_label: port, **labels}


def healthy_options(interval="1s"):
    return ["--health-cmd", "wget -q -O /dev/null http://127.0.0.1/", "--health-interval", interval]


def wait_health(lab, container, wanted):
    wait_for(lambda: lab.inspect(container)["State"].get("Health", {}).get("Status") == wanted, 30,
             f"{container} to be {wanted}")


def answers(haproxy, host, times=6):
    return {haproxy.get(host) for _ in range(times)}


def test_compose_containers_answer_at_their_project_through_haproxy(env, docker_lab, run_rhgen, haproxy):
    lab = docker_lab
    net = lab.network("net")
    project = lab.name("shop")
    web1, web2 = lab.name("shop-web-1"), lab.name("shop-web-2")
    lab.backend(web1, net, compose(lab, project))
    lab.backend(web2, net, compose(lab, project))
    lab.backend(lab.name("shop-db-1"), net, {COMPOSE: project, SERVICE: "db"})  # no routing label

    generated(run_rhgen, env)
    haproxy.start()
    assert answers(haproxy, f"{project}.dev.tld", times=8) == {(200, web1 + "\n"), (200, web2 + "\n")}
    data = routes(run_rhgen, env)
    servers = {s["container"]: s for r in data["routes"] for s in r["servers"]}
    assert set(servers) == {web1, web2}
    assert servers[web1]["address"] == lab.ip(web1, net) and servers[web1]["port"] == 80
    assert servers[web1]["name"].startswith("web-")
    assert data["skipped"] == []


def test_plain_docker_run_container_is_its_own_stack(env, docker_lab, run_rhgen, haproxy):
    lab = docker_lab
    net = lab.network("net")
    plain = lab.name("app-r123")
    lab.backend(plain, net, {lab.route_label: "80"})
    dotted = lab.name("bad.name")  # a valid container name, but not a DNS label
    lab.backend(dotted, net, {lab.route_label: "80"})
    not_a_port = lab.name("notaport")
    lab.backend(not_a_port, net, {lab.route_label: "80a"})
    alone = lab.name("alone")
    lab.run(BACKEND_IMAGE, "sleep", "600", name=alone, network="none", labels={lab.route_label: "80"})

    result = generated(run_rhgen, env)
    assert f"container {dotted!r}: stack {dotted!r} is not a valid DNS label; skipped" in result.stderr
    assert f"container {not_a_port!r}: label {lab.route_label}='80a' is not a port (1-65535); skipped" in result.stderr
    assert f"container {alone!r}: has no network (network_mode host or none cannot be routed to); skipped" in result.stderr
    haproxy.start()
    assert haproxy.get(f"{plain}.dev.tld") == (200, plain + "\n")
    server = routes(run_rhgen, env)["routes"][0]["servers"][0]
    assert server["container"] == plain and server["name"].startswith(f"{plain}-")  # service = the name too


def test_aliases_label_adds_hosts_for_the_stack(env, docker_lab, run_rhgen, haproxy):
    lab = docker_lab
    net = lab.network("net")
    project = lab.name("shop")
    web1, web2 = lab.name("shop-web-1"), lab.name("shop-web-2")
    lab.backend(web1, net, compose(lab, project, **{"rhgen.aliases": "www, shop.example.com"}))
    # Another set on the second container: the stack gets the union; one bad name is skipped alone.
    lab.backend(web2, net, compose(lab, project, **{"rhgen.aliases": "api,bad!name,www"}))
    other = lab.name("other")
    lab.backend(other, net, {lab.route_label: "80", "rhgen.aliases": "Other-Alias"})

    result = generated(run_rhgen, env)
    assert "alias 'bad!name' of stack" in result.stderr and result.stderr.count("warning") == 1
    haproxy.start()
    shop = {(200, web1 + "\n"), (200, web2 + "\n")}
    for host in ("www.dev.tld", "api.dev.tld", "shop.example.com", f"{project}.dev.tld"):
        assert answers(haproxy, host, times=8) == shop, host
    assert haproxy.get("other-alias.dev.tld") == (200, other + "\n")
    assert haproxy.get("bad!name.dev.tld")[0] != 200
    kinds = {(r["host"], r["kind"]) for r in routes(run_rhgen, env)["routes"]}
    assert ("www.dev.tld", "alias") in kinds and ("shop.example.com", "alias") in kinds


def test_only_running_healthy_containers_get_traffic(env, docker_lab, run_rhgen, haproxy):
    lab = docker_lab
    net = lab.network("net")
    project = lab.name("app")
    names = {state: lab.name(f"app-{state}") for state in
             ("healthy", "nocheck", "starting", "unhealthy", "paused", "exited", "created", "restarting")}
    labels = compose(lab, project)
    lab.backend(names["healthy"], net, labels, healthy_options())
    lab.backend(names["nocheck"], net, labels)  # no HEALTHCHECK: running is enough
    lab.backend(names["starting"], net, labels, healthy_options("1h"))  # the first check is an hour away
    lab.backend(names["unhealthy"], net, labels, ["--health-cmd", "false", "--health-interval", "1s",
                                                  "--health-retries", "1"])
    lab.backend(names["paused"], net, labels)
    docker("pause", names["paused"])
    lab.backend(names["exited"], net, labels)
    docker("stop", "-t", "0", names["exited"])
    docker("create", "--label", lab.label, *[f"--label={k}={v}" for k, v in labels.items()], "--network", net,
           "--name", names["created"], BACKEND_IMAGE, "sleep", "60")
    lab.run(BACKEND_IMAGE, "sh", "-c", "exit 1", name=names["restarting"], network=net, labels=labels,
            options=["--restart", "always"])
    wait_health(lab, names["healthy"], "healthy")
    wait_health(lab, names["unhealthy"], "unhealthy")
    # Docker's restart delay doubles (100 ms, 200 ms, ...): after 3 restarts it sits in "restarting" for long.
    wait_for(lambda: lab.inspect(names["restarting"])["RestartCount"] >= 3
             and lab.inspect(names["restarting"])["State"]["Restarting"], 30, "the restart loop")

    generated(run_rhgen, env)
    # Between two restarts the looping container is "running" for a moment, and routed if listed
    # then: wait for a list that caught it restarting (one that never does fails the test).
    def caught_restarting():
        listed = routes(run_rhgen, env)
        return listed if f"container {names['restarting']!r}" in {s["what"] for s in listed["skipped"]} else None

    data = wait_for(caught_restarting, 30, "a list with the looping container restarting")
    haproxy.start()
    routed = {(200, names["healthy"] + "\n"), (200, names["nocheck"] + "\n")}
    assert answers(haproxy, f"{project}.dev.tld", times=12) == routed
    assert {s["container"] for r in data["routes"] for s in r["servers"]} == {names["healthy"], names["nocheck"]}
    reasons = {s["what"]: s["reason"] for s in data["skipped"]}
    assert reasons == {
        f"container {names['starting']!r}": "health_state is 'starting'",
        f"container {names['unhealthy']!r}": "health_state is 'unhealthy'",
        f"container {names['paused']!r}": "state is 'paused'",
        f"container {names['exited']!r}": "state is 'exited'",
        f"container {names['created']!r}": "state is 'created'",
        f"container {names['restarting']!r}": "state is 'restarting'",
    }


def test_network_setting_picks_the_address_else_the_first_network_by_name(env, docker_lab, run_rhgen, haproxy):
    lab = docker_lab
    first, second = lab.network("a-net"), lab.network("b-net")
    both, only = lab.name("both"), lab.name("only")
    lab.backend(both, second, {lab.route_label: "80"})
    docker("network", "connect", first, both)
    lab.backend(only, second, {lab.route_label: "80"})

    default = {s["container"]: s["address"] for r in routes(run_rhgen, env)["routes"] for s in r["servers"]}
    assert default == {both: lab.ip(both, first), only: lab.ip(only, second)}

    chosen = {**env, "RHGEN_DOCKER_NETWORK": first}
    data = routes(run_rhgen, chosen)
    assert [s["address"] for r in data["routes"] for s in r["servers"]] == [lab.ip(both, first)]
    assert data["skipped"] == [{"what": f"container {only!r}",
                                "reason": f"is not attached to network {first!r} (RHGEN_DOCKER_NETWORK; it is on {second})"}]
    generated(run_rhgen, chosen)
    haproxy.start()
    assert haproxy.get(f"{both}.dev.tld") == (200, both + "\n")


def test_one_list_call_per_run_and_no_inspect(env, docker_lab, run_rhgen):
    lab = docker_lab
    net = lab.network("net")
    for i in range(3):
        lab.backend(lab.name(f"web-{i}"), net, {lab.route_label: "80"}, healthy_options())
    wait_health(lab, lab.name("web-2"), "healthy")
    recorder = SocketRecorder(SOCKET)
    try:
        data = routes(run_rhgen, {**env, "DOCKER_HOST": recorder.host})
        requests = recorder.requests()
    finally:
        recorder.close()
    assert len(data["routes"]) == 3
    assert len(requests) == 1 and requests[0].startswith("GET /containers/json?"), requests


def test_a_missing_socket_says_how_to_mount_it(env, run_rhgen, target, reliability):
    missing = "/tmp/rhgen-no-such-dir/docker.sock"
    result = run_rhgen(["generate"], {**env, "DOCKER_HOST": f"unix://{missing}"})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"rhgen: error: docker socket {missing} not found (DOCKER_HOST=unix://{missing}): "
        f"mount it into the container with -v /var/run/docker.sock:{missing}:ro"
    )
    assert list(target.folder.iterdir()) == []
    reliability(SOURCE, "Docker socket missing", held="exit 1, one error line with the -v to add, nothing written")


def test_permission_denied_on_the_socket_names_its_group(env, docker_daemon, reliability):
    stat = os.stat(SOCKET)
    if stat.st_mode & 0o006:
        pytest.skip(f"{SOCKET} is open to everyone here")
    # rhgen as an unprivileged user, as in a container started without --group-add. The test
    # interpreter may live where that user cannot read (pyenv under /root): Debian's python3 of the
    # same version runs this checkout and the venv's packages instead.
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    pythonpath = f"{REPO}:{site}"
    result = subprocess.run([python, "-m", "rhgen", "routes"], env={**env, "HOME": "/", "PYTHONPATH": pythonpath},
                            cwd="/", user="nobody", group="nogroup", extra_groups=[], capture_output=True, text=True,
                            timeout=60)
    group = grp.getgrgid(stat.st_gid).gr_name
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"rhgen: error: docker socket {SOCKET}: permission denied (owned by group {group}, gid {stat.st_gid}, "
        f"mode {stat.st_mode & 0o777:o}): run rhgen in that group (docker run --group-add {stat.st_gid}) or as root"
    )
    reliability(SOURCE, "Docker socket not permitted to rhgen's user",
                held="exit 1, one error line naming the socket, its group and --group-add")


# --- watch ------------------------------------------------------------------------------------


def test_watch_follows_real_container_and_network_events(env, docker_lab, tmp_path):
    lab = docker_lab
    net, proxy_net = lab.network("net"), lab.network("proxy")
    watch_env = {**env, "RHGEN_SETTLE": "0.1", "RHGEN_RESYNC": "3600"}  # changes only from events
    backends = lambda: env_file(env, "HAPROXY_BACKEND_CONFIG")  # noqa: E731
    domains = lambda: env_file(env, "HAPROXY_DOMAIN_MAP")  # noqa: E731
    web = lab.name("web")
    lab.backend(web, net, {lab.route_label: "80"}, healthy_options("1s"))
    watcher = Watch(watch_env, "--allow-empty")
    try:
        watcher.wait_out("changed:", timeout=20)

        def served(expected: bool, what: str, text=backends, needle=None):
            wait_for(lambda: ((needle or lab.ip(web, net)) in text()) == expected, 20, what)

        served(True, "health_status: healthy")
        docker("pause", web)
        served(False, "pause", needle=f"{web}-")
        docker("unpause", web)
        served(True, "unpause", needle=f"{web}-")
        docker("rename", web, web + "-2")
        web += "-2"
        served(True, "rename", text=domains, needle=f"{web}.dev.tld")
        docker("stop", "-t", "1", web)
        served(False, "stop", needle=f"{web}-")
        docker("start", web)
        served(True, "start", needle=f"{web}-")
        docker("kill", web)  # kill, then die
        served(False, "kill", needle=f"{web}-")
        docker("start", web)
        served(True, "start again", needle=f"{web}-")

        # With RHGEN_DOCKER_NETWORK, joining and leaving that network changes the routing.
        watcher.stop()
        watcher = Watch({**watch_env, "RHGEN_DOCKER_NETWORK": proxy_net}, "--allow-empty")
        served(False, "not on the proxy network", needle=f"{web}-")
        docker("network", "connect", proxy_net, web)
        served(True, "network connect", needle=lab.ip(web, proxy_net))
        docker("network", "disconnect", proxy_net, web)
        served(False, "network disconnect", needle=f"{web}-")
        docker("network", "connect", proxy_net, web)
        served(True, "network connect again", needle=f"{web}-")
        docker("rm", "-f", web)  # destroy
        served(False, "destroy", needle=f"{web}-")
        assert watcher.stop() == 0
    finally:
        watcher.close()


def test_watch_ignores_health_check_exec_events(env, docker_lab):
    lab = docker_lab
    web = lab.name("web")
    lab.backend(web, lab.network("net"), {lab.route_label: "80"}, healthy_options("0.2s"))
    wait_health(lab, web, "healthy")
    # The watch replays the events of the second before it starts: let the start and health_status
    # events of this container fall out of that window, so only health-check execs follow.
    time.sleep(2)
    recorder = SocketRecorder(SOCKET)
    watcher = Watch({**env, "DOCKER_HOST": recorder.host, "RHGEN_SETTLE": "0.1", "RHGEN_RESYNC": "3600"})
    try:
        watcher.wait_out("changed:", timeout=20)
        lists = lambda: sum("/containers/json" in line for line in recorder.requests())  # noqa: E731
        time.sleep(0.5)  # the first run's list call is in
        before, since = lists(), f"{time.time():.3f}"

        def health_checks() -> int:  # each one an exec_create/exec_start/exec_die in the events stream
            events = docker("events", "--since", since, "--until", f"{time.time():.3f}",
                            "--filter", f"container={web}", "--filter", "event=exec_start")
            return events.count("exec_start")

        wait_for(lambda: health_checks() >= 6, 20, "six health checks")
        assert lists() == before
        docker("stop", "-t", "1", web)
        wait_for(lambda: lists() > before, 20, "a run after the stop")
        assert watcher.stop() == 0
    finally:
        watcher.close()
        recorder.close()


def test_watch_ignores_network_events_of_unlabelled_containers(env, docker_lab):
    lab = docker_lab
    net, side = lab.network("net"), lab.network("side")
    web, other = lab.name("web"), lab.name("other")
    web_id = lab.backend(web, net, {lab.route_label: "80"})
    other_id = lab.run(BACKEND_IMAGE, "sleep", "600", name=other, network=net)  # no routing label: not ours
    watcher = Watch({**env, "RHGEN_SETTLE": "0.1", "RHGEN_RESYNC": "3600"}, "-v")
    try:
        watcher.wait_out("changed:", timeout=20)
        late_id = lab.backend(lab.name("late"), net, {lab.route_label: "80"})  # known from its own events
        docker("network", "connect", side, other)
        docker("network", "disconnect", side, other)
        docker("network", "connect", side, web)
        docker("network", "connect", side, lab.name("late"))
        # The stream is read in order: once the labelled containers' connects are in, the other's two
        # events were read before them, and each event that counts is logged (-v) as it notifies.
        ours = [f"network connect of container {cid[:12]}" for cid in (web_id, late_id)]
        seen = lambda needle: any(needle in line for line in watcher.err)  # noqa: E731
        wait_for(lambda: all(map(seen, ours)), 20, f"{ours} in the watch's log")
        after = max(i for i, line in enumerate(watcher.err) if any(needle in line for needle in ours))
        wait_for(lambda: any(line.startswith("run: ") or " run: " in line for line in watcher.err[after:]), 20,
                 f"a run on the labelled container's connect: {watcher.err[after:]}")
        assert [line for line in watcher.err if other_id[:12] in line] == []
        assert watcher.stop() == 0
    finally:
        watcher.close()


def env_file(env, key):
    try:
        with open(env[key]) as file:
            return file.read()
    except FileNotFoundError:
        return ""


def test_watch_reconnects_after_a_dockerd_restart(private_dockerd, tmp_path, env, reliability):
    daemon = private_dockerd
    label = env["RANCHER_LABEL"]

    def run(name):
        daemon.docker("run", "-d", "--network", "none", "--label", f"{label}=80", "--name", name,
                      BACKEND_IMAGE, "sleep", "600")

    run("before")
    watcher = Watch({**env, "DOCKER_HOST": daemon.host, "RHGEN_SETTLE": "0.1", "RHGEN_RESYNC": "3600"},
                    "--allow-empty")
    try:
        seen = lambda name: any(f"container {name!r}: has no network" in line for line in watcher.err)  # noqa: E731
        wait_for(lambda: seen("before"), 20, "the first run")
        daemon.stop()
        wait_for(lambda: any("/events" in line and "trying again" in line for line in watcher.err), 20,
                 f"the watch to notice the daemon is gone: {watcher.err}")
        daemon.start()
        wait_for(lambda: any("answering again" in line for line in watcher.err), 30, "the watch to reconnect")
        run("after")  # a change made after the restart, seen only through the new events stream
        wait_for(lambda: seen("after"), 20, f"the watch to see the new container: {watcher.err[-5:]}")
        assert watcher.stop(signal.SIGTERM) == 0
        reliability(SOURCE, "dockerd restart under rhgen watch",
                    held="the watch retries, reconnects by itself and sees a container started after the restart")
    finally:
        watcher.close()
