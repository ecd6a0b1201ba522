"""`rhgen routes` shows the same picture, skipped containers and PROXY protocol included, for every source."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.fake_docker import docker_container, DockerDaemon
from tests.support.metadata import container, MetadataServer
from tests.support.net import free_port
from tests.support.rhgen import rhgen_env

RANCHER_CONTAINERS = [
    container("app1", "web", "10.42.0.11", 8080, health="healthy", name="app1-web-1"),
    container("app1", "web", "10.42.0.12", 8080, health="unhealthy", name="app1-web-2"),
    container("App-R2", "web", "10.42.0.21", 8081, labels={"proxy_protocol": "send-proxy-v2"}, name="App-R2-web-1"),
    container("app3", "web", "10.42.0.31", 8080, state="stopped", name="app3-web-1"),
    container("app4", "web", "10.42.0.41", "80a", name="app4-web-1"),
]
DOCKER_CONTAINERS = [
    docker_container("app1-web-1", "app1", "10.42.0.11", 8080, health="healthy"),
    docker_container("app1-web-2", "app1", "10.42.0.12", 8080, health="unhealthy"),
    docker_container("App-R2-web-1", "App-R2", "10.42.0.21", 8081, proxy_protocol="send-proxy-v2"),
    docker_container("app3-web-1", "app3", "10.42.0.31", 8080, status="exited"),
    docker_container("app4-web-1", "app4", "10.42.0.41", "80a"),
]
ALIASES = {"aliases": {"app1": ["www"], "nosuch": ["ghost"]}}


@pytest.fixture(params=["rancher", "file", "docker", "disable_metadata"])
def source(request, tmp_path):
    """The settings that point rhgen at the same environment through each source."""
    if request.param == "rancher":
        server = MetadataServer("2015-12-19")
        server.set(RANCHER_CONTAINERS, ALIASES)
        yield {"RANCHER_API_HOST": f"http://{server.host}", "RANCHER_API_VERSION": "2015-12-19"}
        server.close()
    elif request.param in ("file", "disable_metadata"):
        answers = tmp_path / "answers.json"
        answers.write_text(json.dumps({"containers": RANCHER_CONTAINERS, "self_service_metadata": ALIASES}))
        switch = {"RHGEN_SOURCE": "file"} if request.param == "file" else {"DISABLE_METADATA": "true"}
        yield {**switch, "METADATA_FILE": str(answers)}
    else:
        folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
        daemon = DockerDaemon(folder / "docker.sock")
        daemon.put(*DOCKER_CONTAINERS)
        yield {"RHGEN_SOURCE": "docker", "DOCKER_HOST": daemon.url}
        daemon.close()
        shutil.rmtree(folder, ignore_errors=True)


def routes(tmp_path: Path, source: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    env = rhgen_env(tmp_path, free_port(), RANCHER_PROXY_LABEL="proxy_protocol", **source)
    return subprocess.run([sys.executable, "-m", "rhgen", "routes", *args], env=env, capture_output=True, text=True, timeout=30)


def test_routes_json_is_the_same_for_every_source(tmp_path, source):
    result = routes(tmp_path, source, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    docker = source.get("RHGEN_SOURCE") == "docker"
    assert [(r["host"], r["backend"], r["kind"]) for r in data["routes"]] == [
        ("app-r2.dev.tld", "app-r2", "stack"),
        ("app1.dev.tld", "app1", "stack"),
    ] + ([] if docker else [("www.dev.tld", "app1", "alias")])  # Docker has no proxy service metadata
    servers = {s["container"]: s for r in data["routes"] for s in r["servers"]}
    assert set(servers) == {"app1-web-1", "App-R2-web-1"}
    assert servers["App-R2-web-1"]["proxy_protocol"] == "send-proxy-v2"
    assert servers["app1-web-1"]["proxy_protocol"] is None
    assert (servers["App-R2-web-1"]["address"], servers["App-R2-web-1"]["port"]) == ("10.42.0.21", 8081)
    reasons = {s["what"]: s["reason"] for s in data["skipped"]}
    assert reasons["container 'app1-web-2'"] == "health_state is 'unhealthy'"
    assert reasons["container 'app3-web-1'"] == ("state is 'exited'" if docker else "state is 'stopped'")
    assert reasons["container 'app4-web-1'"] == "label map-public-http='80a' is not a port (1-65535)"
    if not docker:
        assert reasons["alias 'ghost' of stack 'nosuch'"] == "stack has no routed containers"


def test_routes_text_lists_servers_with_proxy_protocol_and_skipped_with_reasons(tmp_path, source):
    result = routes(tmp_path, source)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "app-r2.dev.tld  →  app-r2  (stack)" in lines
    assert any(line.strip().endswith("10.42.0.21:8081  send-proxy-v2  [App-R2-web-1]") for line in lines)
    skipped = lines[lines.index("skipped:") + 1:]
    assert "    container 'app1-web-2': health_state is 'unhealthy'" in skipped
    assert "    container 'app4-web-1': label map-public-http='80a' is not a port (1-65535)" in skipped
    # Only the bad label is worth a warning; stopped and unhealthy containers are ordinary.
    assert "app4-web-1" in result.stderr and "app1-web-2" not in result.stderr
