"""The image as users run it, on the real Docker Engine: built by docker/build.sh, started with
`docker run` or docker-compose, reading real containers (Docker source) or a Rancher metadata
look-alike in a container, serving real traffic on a port published on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from tests.support.net import get
from tests.support.docker import BACKEND_IMAGE, REPO, docker, wait_for

pytestmark = pytest.mark.usefixtures("docker_daemon")

DOMAIN = "dev.tld"
SOCKET = "/var/run/docker.sock"


def run_proxy(lab, image, network, env, *command, options=()):
    """The proxy container, port 80 published on 127.0.0.1; (container, host port)."""
    environment = [f"--env={key}={value}" for key, value in env.items()]
    proxy = lab.run(image, *command, name=lab.name("proxy"), network=network,
                    options=["--publish", "127.0.0.1::80", *environment, *options])
    return proxy, lab.published_port(proxy)


def answers(port, host, body=None, path="/"):
    """A check for wait_for: `host` answers 200 (with `body` when given)."""

    def check():
        status, text = get(port, host, path=path, timeout=2.0)
        return status == 200 and (body is None or text.strip() == body)

    return check


def compose_backend(lab, network, project, index=1):
    """A container of compose project `project`, as `docker compose -p project up` labels it."""
    name = lab.name(f"{project}-web-{index}")
    labels = {"com.docker.compose.project": project, "com.docker.compose.service": "web", lab.route_label: "80"}
    lab.backend(name, network, labels=labels)
    return name


def processes(container):
    """(uid, state, command) of every process in the container, as the host's ps sees them."""
    rows = docker("top", container, "-eo", "pid,uid,stat,args").splitlines()[1:]
    return [tuple(row.split(None, 3)[1:]) for row in rows]


# --- Docker source ---------------------------------------------------------------------------


def test_image_routes_docker_containers_with_only_the_socket_mounted(rhgen_image, docker_lab):
    network = docker_lab.network("net")
    project = docker_lab.name("shop")
    backend = compose_backend(docker_lab, network, project)
    proxy, port = run_proxy(
        docker_lab, rhgen_image, network,
        {"STACK_DOMAIN": DOMAIN, "RHGEN_SOURCE": "docker", "RANCHER_LABEL": docker_lab.route_label},
        options=["--volume", f"{SOCKET}:{SOCKET}:ro"],
    )
    wait_for(answers(port, f"{project}.{DOMAIN}", backend), 60, f"{project}.{DOMAIN} through the image "
             f"(logs: {docker_lab.logs(proxy)[-2000:]})")
    # No --user, no --group-add, yet nothing runs as root: the entrypoint dropped to rhgen (10001)
    # with the socket's group only.
    running = processes(proxy)
    assert running and all(uid == "10001" for uid, _, _ in running), running
    assert any("haproxy" in command for _, _, command in running)


def test_image_without_the_socket_says_how_to_mount_it(rhgen_image, docker_lab):
    network = docker_lab.network("net")
    proxy, _ = run_proxy(docker_lab, rhgen_image, network,
                         {"STACK_DOMAIN": DOMAIN, "RHGEN_SOURCE": "docker", "RANCHER_LABEL": docker_lab.route_label})
    logs = wait_for(lambda: (text := docker_lab.logs(proxy)) and "rhgen: error" in text and text, 30, "an error")
    error = next(line for line in logs.splitlines() if line.startswith("rhgen: error"))
    assert f"-v {SOCKET}:{SOCKET}:ro" in error, error


# --- Rancher source, both seed layouts -------------------------------------------------------


class RancherMetadata:
    """The Rancher 1.x metadata service, as files served by busybox httpd in a container that answers
    at http://rancher-metadata/ on the test network (the image's default RANCHER_API_HOST)."""

    def __init__(self, lab, network):
        self.lab = lab
        self.container = lab.run(
            BACKEND_IMAGE, "sh", "-c", "mkdir -p /www/latest/self/service && exec httpd -f -p 80 -h /www",
            name=lab.name("metadata"), network=network, options=["--network-alias", "rancher-metadata"],
        )

    def put(self, containers, service_metadata=None):
        self._write("/www/latest/containers", containers)
        if service_metadata is not None:
            self._write("/www/latest/self/service/metadata", service_metadata)

    def _write(self, path, data):
        # Written beside, then renamed: a reader never sees half an answer.
        docker("exec", "-i", self.container, "sh", "-c", f"cat > {path}.new && mv {path}.new {path}",
               input=json.dumps(data))


def rancher_container(lab, name, network, stack):
    """A busybox backend and its entry in Rancher's /containers."""
    container = lab.backend(lab.name(name), network)
    return {
        "name": lab.name(name), "uuid": container[:12], "stack_name": stack, "service_name": "web",
        "primary_ip": lab.ip(container, network), "state": "running", "health_state": "healthy",
        "labels": {"map-public-http": "80"},
    }


def test_image_reads_rancher_metadata_with_only_stack_domain_set(rhgen_image, docker_lab):
    network = docker_lab.network("net")
    metadata = RancherMetadata(docker_lab, network)
    web = [rancher_container(docker_lab, f"app1-web-{i}", network, "app1") for i in (1, 2)]
    metadata.put(web, {"aliases": {"app1": ["www"]}})
    proxy, port = run_proxy(docker_lab, rhgen_image, network, {"STACK_DOMAIN": DOMAIN})
    wait_for(answers(port, f"app1.{DOMAIN}"), 60, f"app1 through the image (logs: {docker_lab.logs(proxy)[-2000:]})")
    bodies = {get(port, f"app1.{DOMAIN}")[1].strip() for _ in range(6)}
    assert bodies == {item["name"] for item in web}  # both servers take turns
    assert get(port, f"www.{DOMAIN}")[0] == 200  # the alias from the proxy's service metadata
    assert get(port, f"nope.{DOMAIN}")[0] == 503


def test_sidekick_layout_reloads_the_http_container_when_the_maps_change(rhgen_image, docker_lab):
    network = docker_lab.network("net")
    metadata = RancherMetadata(docker_lab, network)
    app1 = rancher_container(docker_lab, "app1-web-1", network, "app1")
    metadata.put([app1])
    # HTTP-generate-maps writes into its volume; HTTP runs haproxy on it (volumes_from), as in examples/sidekick.
    maps = docker_lab.run(rhgen_image, "generate-maps", name=docker_lab.name("maps"), network=network,
                          options=["--env", f"STACK_DOMAIN={DOMAIN}", "--volume", "/usr/local/etc/haproxy",
                                   "--env", "RHGEN_INTERVAL=1"])
    http, port = run_proxy(docker_lab, rhgen_image, network, {"RHGEN_MODE": "haproxy-only"},
                           options=["--volumes-from", maps])
    wait_for(answers(port, f"app1.{DOMAIN}", app1["name"]), 60,
             f"app1 through the HTTP container (logs: {docker_lab.logs(http)[-2000:]})")
    app2 = rancher_container(docker_lab, "app2-web-1", network, "app2")
    metadata.put([app1, app2])
    wait_for(answers(port, f"app2.{DOMAIN}", app2["name"]), 30, "app2 after the sidekick rewrote the maps")
    # The new worker may serve a moment before the watcher, waiting on the master's report, logs it.
    wait_for(lambda: "haproxy reloaded" in docker_lab.logs(http), 10, "the reload in the HTTP container's log")
    assert get(port, f"app1.{DOMAIN}") == (200, app1["name"] + "\n")


# --- stopping --------------------------------------------------------------------------------

SLOW_CGI = '#!/bin/sh\nsleep 2\nprintf "Content-Type: text/plain\\r\\n\\r\\nslow\\n"\n'


def test_docker_stop_lets_requests_in_flight_finish_and_exits_0(rhgen_image, docker_lab):
    network = docker_lab.network("net")
    project = docker_lab.name("slow")
    backend = compose_backend(docker_lab, network, project)
    docker("exec", "-i", backend, "sh", "-c", "mkdir -p /www/cgi-bin && cat > /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow",
           input=SLOW_CGI)
    proxy, port = run_proxy(
        docker_lab, rhgen_image, network,
        {"STACK_DOMAIN": DOMAIN, "RHGEN_SOURCE": "docker", "RANCHER_LABEL": docker_lab.route_label},
        options=["--volume", f"{SOCKET}:{SOCKET}:ro"],
    )
    host = f"{project}.{DOMAIN}"
    wait_for(answers(port, host, backend), 60, f"{host} (logs: {docker_lab.logs(proxy)[-2000:]})")
    assert not [row for row in processes(proxy) if row[1].startswith("Z")], "zombies before the stop"

    in_flight = {}

    def slow_request():
        in_flight["answer"] = get(port, host, path="/cgi-bin/slow", timeout=15)

    client = threading.Thread(target=slow_request)
    client.start()
    time.sleep(0.5)  # the request is at the backend, which answers after 2 s
    started = time.monotonic()
    docker("stop", "--time", "10", proxy, timeout=30)
    took = time.monotonic() - started
    client.join(15)
    state = docker_lab.inspect(proxy)["State"]
    assert in_flight.get("answer") == (200, "slow\n")
    assert state["ExitCode"] == 0, docker_lab.logs(proxy)[-2000:]
    assert took < 10, f"docker stop took {took:.1f} s: the container was killed, not stopped"
    assert "haproxy exited with status 0" in docker_lab.logs(proxy)


# --- the compose example ---------------------------------------------------------------------


def test_compose_example_routes_the_project_through_the_proxy(rhgen_image, docker_lab, tmp_path):
    project = docker_lab.name("app1")
    network = docker_lab.name("web")
    # The example's app is an image users have; here it is the local busybox one, nothing is pulled.
    override = tmp_path / "override.yml"
    override.write_text(
        "version: '2.4'\nservices:\n"
        f"  app:\n    image: {BACKEND_IMAGE}\n"
        "    command: [sh, -c, 'hostname > /www/index.html; exec httpd -f -p 80 -h /www']\n"
        f"    labels: {{rhgen.test: '{docker_lab.run_id}'}}\n"
        f"  proxy:\n    labels: {{rhgen.test: '{docker_lab.run_id}'}}\n"
    )
    env = {**os.environ, "RHGEN_IMAGE": rhgen_image, "STACK_DOMAIN": DOMAIN, "PROXY_PUBLISH": "127.0.0.1::80",
           "WEB_NETWORK": network}
    compose = ["docker-compose", "-p", project, "-f", str(REPO / "examples" / "docker" / "docker-compose.yml"),
               "-f", str(override)]
    try:
        up = subprocess.run([*compose, "up", "-d"], env=env, capture_output=True, text=True, timeout=180)
        assert up.returncode == 0, up.stderr
        proxy = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                       "--filter", "label=com.docker.compose.service=proxy")
        app = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                     "--filter", "label=com.docker.compose.service=app")
        port = docker_lab.published_port(proxy)
        hostname = docker_lab.inspect(app)["Config"]["Hostname"]
        wait_for(answers(port, f"{project}.{DOMAIN}", hostname), 60,
                 f"{project}.{DOMAIN} (logs: {docker_lab.logs(proxy)[-2000:]})")
    finally:
        subprocess.run([*compose, "down", "-v", "--timeout", "5"], env=env, capture_output=True, timeout=120)
    assert not docker("network", "ls", "-q", "--filter", f"name=^{network}$")
