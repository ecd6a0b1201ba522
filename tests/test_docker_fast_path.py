"""The no-change shortcut with RHGEN_SOURCE=docker, on the real Docker Engine: a run that finds
what routing reads unchanged since the last one makes no model, although the daemon's answer
differs (its Status text says "Up 3 seconds", then "Up 4 seconds"); every real change (a container
stopped or paused, a label changed, a network joined or left, a health check failing) still
takes the full path and changes the files."""

from __future__ import annotations

import os

import pytest
from tests.support.docker import docker, wait_for

SOCKET = "/var/run/docker.sock"


@pytest.fixture
def env(target, docker_lab):
    """The target's environment, reading the real daemon and only this lab's containers."""
    return {**target.env, "PATH": os.environ["PATH"], "RHGEN_SOURCE": "docker", "DOCKER_HOST": f"unix://{SOCKET}",
            "RANCHER_LABEL": docker_lab.route_label}


def generated(run_rhgen, env, *flags):
    result = run_rhgen(["generate", *flags], env)
    assert result.returncode == 0, result.stderr
    return result


def armed(run_rhgen, env, target):
    """Files in service, then a run that finds its model in service: it records the answers' digest."""
    generated(run_rhgen, env)
    result = generated(run_rhgen, env)
    assert result.stdout.endswith("no change\n"), result.stdout
    assert (target.folder / ".rhgen.answers").exists()


def status(container):
    return docker("ps", "-a", "--filter", f"name=^{container}$", "--format", "{{.Status}}")


def test_an_unchanged_docker_run_makes_no_model_though_the_status_text_changed(env, docker_lab, run_rhgen, target):
    lab = docker_lab
    net = lab.network("net")
    web = lab.name("web")
    lab.backend(web, net, {lab.route_label: "80"})
    armed(run_rhgen, env, target)
    before = status(web)
    wait_for(lambda: status(web) != before, 20, f"{web}'s Status text to move on from {before!r}")
    # What the summary says comes from the record, not from a model: proof that none was made.
    remembered = target.folder / ".rhgen.answers"
    lines = remembered.read_text().split("\n")
    remembered.write_text("\n".join([*lines[:2], "7 8 9", *lines[3:]]))
    result = generated(run_rhgen, env)
    assert result.stdout == "7 hosts → 8 backends, 9 servers; no change\n"


def test_an_unchanged_docker_run_imports_neither_requests_nor_jinja2(env, docker_lab, run_rhgen, target):
    lab = docker_lab
    lab.backend(lab.name("web"), lab.network("net"), {lab.route_label: "80"})
    armed(run_rhgen, env, target)
    result = generated(run_rhgen, {**env, "PYTHONPROFILEIMPORTTIME": "1"})
    assert result.stdout.endswith("no change\n")
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported and "msgspec" in imported  # the import log is really there
    assert not {name for name in imported if name.split(".")[0] in ("requests", "urllib3", "jinja2", "cryptography")}


def pause(lab, web, net):
    docker("pause", web)


def stop(lab, web, net):
    docker("stop", "-t", "1", web)


def relabel(lab, web, net):
    """What compose does when a label changes: the container is made again, same name, new labels."""
    docker("rm", "-f", web)
    lab.backend(web, net, {lab.route_label: "80", "rhgen.aliases": "shop"})


def sicken(lab, web, net):
    docker("exec", web, "sh", "-c", "echo > /tmp/sick")
    wait_for(lambda: lab.inspect(web)["State"]["Health"]["Status"] == "unhealthy", 30, f"{web} to be unhealthy")


def leave(lab, web, net):
    docker("network", "disconnect", net, web)


CHANGES = {  # the change, and what the files say afterwards
    "paused": (pause, lambda web, text: f"{web}-" not in text),
    "stopped": (stop, lambda web, text: f"{web}-" not in text),
    "relabelled": (relabel, lambda web, text: "shop.dev.tld" in text),
    "unhealthy": (sicken, lambda web, text: f"{web}-" not in text),
    "disconnected": (leave, lambda web, text: f"{web}-" not in text),
}


@pytest.mark.parametrize("change", CHANGES)
def test_each_real_change_takes_the_full_path(env, docker_lab, run_rhgen, target, change):
    lab = docker_lab
    net, other = lab.network("net"), lab.network("other")
    web = lab.name("web")
    # A health check only where it is the change: a paused container's Status drops its health too.
    health = ["--health-cmd", "test ! -e /tmp/sick", "--health-interval", "0.5s", "--health-retries", "1"]
    lab.backend(web, net, {lab.route_label: "80"}, health if change == "unhealthy" else ())
    docker("network", "connect", other, web)  # on two networks: leaving `net` keeps it listed, with no address there
    if change == "unhealthy":
        wait_for(lambda: lab.inspect(web)["State"]["Health"]["Status"] == "healthy", 30, f"{web} to be healthy")
    routed = {**env, "RHGEN_DOCKER_NETWORK": net}
    armed(run_rhgen, routed, target)
    assert f"{web}-" in target.backends.read_text()
    make, seen = CHANGES[change]
    make(lab, web, net)
    result = generated(run_rhgen, routed, "--allow-empty")  # the one route may go
    assert "changed:" in result.stdout, (result.stdout, result.stderr)
    files = target.backends.read_text() + target.map.read_text()
    assert seen(web, files), files


def test_joining_the_routed_network_takes_the_full_path(env, docker_lab, run_rhgen, target):
    lab = docker_lab
    net, proxy = lab.network("net"), lab.network("proxy")
    web, other = lab.name("web"), lab.name("other")
    lab.backend(web, net, {lab.route_label: "80"})
    lab.backend(other, proxy, {lab.route_label: "80"})
    routed = {**env, "RHGEN_DOCKER_NETWORK": proxy}
    armed(run_rhgen, routed, target)
    assert f"{web}-" not in target.backends.read_text()
    docker("network", "connect", proxy, web)
    result = generated(run_rhgen, routed)
    assert "changed:" in result.stdout, (result.stdout, result.stderr)
    assert lab.ip(web, proxy) in target.backends.read_text()
