"""RHGEN_SOURCE=swarm on a real single-node swarm: services made with `docker service create` and
`docker stack deploy` of the busybox image (each replica answers its task's host name), rhgen on
the host reading the manager's socket, and traffic through the proxy image attached to the test's
overlay network with its port published on 127.0.0.1 (overlay addresses are not routed from the host)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.fake_docker import DockerDaemon
from tests.support.net import free_port, get
from tests.support.rhgen import rhgen_env
from tests.support.docker import BACKEND_COMMAND, REPO, docker, docker_cli, wait_for

SOCKET = "/var/run/docker.sock"
DOMAIN = "dev.tld"
EXAMPLES = REPO / "examples" / "swarm"


def routes(tmp_path, lab, **settings):
    env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="swarm", DOCKER_HOST=f"unix://{SOCKET}",
                    RANCHER_LABEL=lab.route_label, **settings)
    done = subprocess.run([sys.executable, "-m", "rhgen", "routes", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def addresses(tasks, network):
    """Each task's address on `network` (by name)."""
    return sorted(
        a["Addresses"][0].split("/")[0] for t in tasks for a in t["NetworksAttachments"] if a["Network"]["Spec"]["Name"] == network
    )


def labelled(lab, stack, port="80"):
    return ["--label", f"{lab.route_label}={port}", "--label", f"com.docker.stack.namespace={stack}"]


def test_swarm_services_route_to_their_running_tasks_on_the_shared_network(tmp_path, swarm_lab):
    lab = swarm_lab
    net = lab.network("net", "--driver", "overlay", "--attachable")
    other = lab.network("other", "--driver", "overlay")
    stack = lab.name("shop")
    web = lab.service("shop_web", "--replicas", "2", "--network", net, *labelled(lab, stack))
    # Renamed by hand: docker stack deploy names services <stack>_<service>.
    lab.service("plain", "--network", net)  # no routing label: not routed, listed as skipped
    elsewhere = lab.service("away_web", "--network", other, *labelled(lab, lab.name("away")))
    on_containers = lab.service("misplaced", "--network", net, "--container-label", f"{lab.route_label}=80")
    # Swarm keeps a task in `starting` until its healthcheck passes (this one first runs after 60 s).
    sick = lab.service("sick_web", "--network", net, "--health-cmd", "exit 1", "--health-interval", "60s",
                       *labelled(lab, lab.name("sick")))
    tasks = wait_for(lab.running(web, 2), 60, f"{web}: 2 running tasks")
    wait_for(lab.running(elsewhere, 1), 60, f"{elsewhere} running")
    wait_for(lambda: docker("service", "ps", "--format", "{{.CurrentState}}", sick).startswith("Starting"), 60,
             f"{sick} starting")

    data = routes(tmp_path, lab, RHGEN_DOCKER_NETWORK=net)
    mine = [r for r in data["routes"] if r["backend"].startswith(lab.prefix)]
    assert [r["host"] for r in mine] == [f"{stack}.{DOMAIN}"]
    servers = mine[0]["servers"]
    assert sorted(s["address"] for s in servers) == addresses(tasks, net)
    assert all(s["port"] == 80 and s["name"].startswith("web-") for s in servers)  # service = name minus "<stack>_"
    reasons = {s["what"]: s["reason"] for s in data["skipped"] if lab.prefix in s["what"]}
    assert reasons[f"service '{lab.name('plain')}'"] == f"has no service label {lab.route_label} (compose: deploy.labels)"
    assert reasons[f"service '{on_containers}'"].startswith(f"has no service label {lab.route_label} on its containers")
    away = [reason for what, reason in reasons.items() if what.startswith(f"task '{elsewhere}.")]
    assert [reason for what, reason in reasons.items() if what.startswith(f"container '{sick}.")] == ["state is 'starting'"]
    assert away == [f"is not attached to network {net!r} (RHGEN_DOCKER_NETWORK; it is on {other})"]


def test_swarm_network_is_matched_by_id_as_well_as_by_name(tmp_path, swarm_lab):
    lab = swarm_lab
    net = lab.network("net", "--driver", "overlay", "--attachable")
    web = lab.service("idstack_web", "--network", net, *labelled(lab, lab.name("idstack")))
    tasks = wait_for(lab.running(web, 1), 60, f"{web} running")
    network_id = docker("network", "inspect", "--format", "{{.Id}}", net)
    data = routes(tmp_path, lab, RHGEN_DOCKER_NETWORK=network_id)
    mine = [s["address"] for r in data["routes"] if r["backend"].startswith(lab.prefix) for s in r["servers"]]
    assert mine == addresses(tasks, net)


def test_swarm_vip_mode_gives_one_server_per_service_at_its_virtual_ip(tmp_path, swarm_lab):
    lab = swarm_lab
    net = lab.network("net", "--driver", "overlay", "--attachable")
    stack = lab.name("vipstack")
    web = lab.service("vipstack_web", "--replicas", "2", "--network", net, *labelled(lab, stack))
    dnsrr = lab.service("vipstack_rr", "--endpoint-mode", "dnsrr", "--network", net, *labelled(lab, stack))
    wait_for(lab.running(web, 2), 60, f"{web}: 2 running tasks")
    service = json.loads(docker("service", "inspect", web))[0]
    net_id = docker("network", "inspect", "--format", "{{.Id}}", net)
    vip = next(v["Addr"].split("/")[0] for v in service["Endpoint"]["VirtualIPs"] if v["NetworkID"] == net_id)
    data = routes(tmp_path, lab, RHGEN_DOCKER_NETWORK=net, RHGEN_SWARM_ENDPOINT="vip")
    mine = [s for r in data["routes"] if r["backend"].startswith(lab.prefix) for s in r["servers"]]
    assert [(s["address"], s["container"]) for s in mine] == [(vip, web)]
    reasons = {s["what"]: s["reason"] for s in data["skipped"]}
    assert reasons[f"service {dnsrr!r}"].startswith("has no virtual IP (endpoint mode dnsrr")


# --- traffic through the proxy image on the overlay network ---------------------------------


def proxy_container(lab, image, net, **env):
    """The rhgen image in watch mode as a container on the attachable overlay network, reading the
    manager's socket, port 80 published on 127.0.0.1; (container, port)."""
    environment = {"STACK_DOMAIN": DOMAIN, "RHGEN_SOURCE": "swarm", "RHGEN_MODE": "watch",
                   "RANCHER_LABEL": lab.route_label, "RHGEN_DOCKER_NETWORK": net, **env}
    proxy = lab.run(image, name=lab.name("proxy"), network=net,
                    options=["--publish", "127.0.0.1::80", "--volume", f"{SOCKET}:{SOCKET}:ro",
                             *[f"--env={k}={v}" for k, v in environment.items()]])
    return proxy, lab.published_port(proxy)


def answering(port, host, samples=40):
    """The set of host names answering `host` over `samples` requests (haproxy balances round robin)."""
    seen = set()
    for _ in range(samples):
        status, text = get(port, host, timeout=2.0)
        if status == 200:
            seen.add(text.strip())
    return seen


def task_hostnames(lab, service, count):
    tasks = wait_for(lab.running(service, count), 90, f"{service}: {count} running tasks")
    return {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in tasks}


def test_swarm_proxy_reaches_every_replica_and_follows_a_scale(rhgen_image, swarm_lab):
    lab = swarm_lab
    net = lab.network("net", "--driver", "overlay", "--attachable")
    stack = lab.name("app")
    web = lab.service("app_web", "--replicas", "2", "--network", net, *labelled(lab, stack))
    # Another routed stack: a source answer that routes nothing at all is refused (the blanking guard).
    lab.service("keep_web", "--network", net, *labelled(lab, lab.name("keep")))
    expected = task_hostnames(lab, web, 2)
    proxy, port = proxy_container(lab, rhgen_image, net)
    host = f"{stack}.{DOMAIN}"
    wait_for(lambda: answering(port, host) == expected, 60,
             f"{host} answered by both replicas (logs: {lab.logs(proxy)[-1500:]})", interval=0.5)
    docker("service", "scale", "--detach", f"{web}=4")
    expected = task_hostnames(lab, web, 4)
    wait_for(lambda: answering(port, host) == expected, 30, f"{host} answered by 4 replicas", interval=0.2)
    # A label added to a running service changes no task: the service events bring it in.
    late = lab.service("late_web", "--network", net)
    late_host = f"{lab.name('late')}.{DOMAIN}"
    expected_late = task_hostnames(lab, late, 1)
    assert get(port, late_host, timeout=2.0)[0] == 503
    docker("service", "update", "--detach", *(f"--label-add={x}" for x in labelled(lab, lab.name("late"))[1::2]), late)
    wait_for(lambda: answering(port, late_host, samples=2) == expected_late, 10, f"{late_host} after --label-add")
    docker("service", "rm", web)
    wait_for(lambda: get(port, host, timeout=2.0)[0] == 503, 30, f"{host} gone: 503")


# --- nodes that cannot answer: the Docker API look-alike (a real worker needs a second machine) --


@pytest.mark.parametrize("swarm_state, message", [
    ({"LocalNodeState": "active", "ControlAvailable": False}, "this node is a worker: point DOCKER_HOST at a manager"),
    ({"LocalNodeState": "inactive", "ControlAvailable": False}, "this node is not in a swarm"),
])
def test_swarm_source_on_a_node_that_is_no_manager_fails_in_one_line(tmp_path, swarm_state, message):
    folder = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))  # unix socket paths are limited to 107 bytes
    daemon = DockerDaemon(folder / "docker.sock")
    try:
        daemon.info = {"Swarm": {**swarm_state, "NodeID": "f5akinmsjpupvydny9xe02jtk"}}
        env = rhgen_env(tmp_path, free_port(), RHGEN_SOURCE="swarm", DOCKER_HOST=daemon.url)
        done = subprocess.run([sys.executable, "-m", "rhgen", "generate"], env=env, capture_output=True, text=True,
                              timeout=30)
    finally:
        daemon.close()
        shutil.rmtree(folder, ignore_errors=True)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("rhgen: error")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert not (tmp_path / "haproxy.cfg").exists()
    assert not any("/services" in r or "/tasks" in r for r in daemon.requests)


# --- examples/swarm: both stacks deployed with docker stack deploy -------------------------------


@pytest.fixture(scope="module")
def app_image(backend_image):
    """The busybox backend with the httpd as its default command, as the example's app image
    must be (app.yml gives no command)."""
    name = "rhgen-test-busybox-httpd:2"
    if subprocess.run([docker_cli(), "image", "inspect", name], capture_output=True).returncode != 0:
        dockerfile = f"FROM {backend_image}\nCMD {json.dumps(list(BACKEND_COMMAND))}\n"
        docker("build", "--quiet", "--tag", name, "-", input=dockerfile, timeout=300)
    return name


def test_swarm_examples_deploy_route_every_replica_scale_and_stack_rm_gives_503(rhgen_image, app_image, swarm_lab):
    lab = swarm_lab
    port = free_port()
    env = {"RHGEN_IMAGE": rhgen_image, "APP_IMAGE": app_image, "STACK_DOMAIN": DOMAIN, "PROXY_PUBLISH": str(port),
           "WEB_NETWORK": lab.name("web"), "ROUTE_LABEL": lab.route_label}
    proxy = lab.stack("proxy", EXAMPLES / "stack.yml", env)
    app = lab.stack("app", EXAMPLES / "app.yml", env)
    # Another routed stack: a source answer that routes nothing at all is refused (the blanking guard).
    keep = lab.service("keep_web", "--network", env["WEB_NETWORK"], *labelled(lab, lab.name("keep")))
    host = f"{app}.{DOMAIN}"
    expected = task_hostnames(lab, f"{app}_web", 2)
    wait_for(lambda: answering(port, host) == expected, 90,
             f"{host} answered by both replicas through the proxy stack "
             f"(proxy: {docker('service', 'ps', '--no-trunc', f'{proxy}_proxy', check=False)})", interval=0.5)

    docker("service", "scale", "--detach", f"{app}_web=4")
    expected = task_hostnames(lab, f"{app}_web", 4)
    wait_for(lambda: answering(port, host) == expected, 30, f"{host} answered by 4 replicas", interval=0.2)

    docker("stack", "rm", app)
    wait_for(lambda: get(port, host, timeout=2.0)[0] == 503, 30, f"{host} after docker stack rm: 503")
    assert answering(port, f"{lab.name('keep')}.{DOMAIN}", samples=3) == task_hostnames(lab, keep, 1)
