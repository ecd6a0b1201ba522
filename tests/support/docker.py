"""The real Docker Engine for tests: a client for the daemon .ci/run starts, the images the tests
need (built locally, never pulled), and cleanup of everything a test run creates.

Every container, network and volume made through `DockerLab` carries the label
`rhgen.test=<run id>` and is removed when the lab closes, also after a failure; images are kept
as a cache between runs. Traffic goes only to ports published on 127.0.0.1 and to containers
made here, on networks made here.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import net

REPO = Path(__file__).resolve().parents[2]
LABEL = "rhgen.test"
# One tag per checkout: several checkouts share a daemon, and a shared tag let one test run use the
# image another checkout had just built from its own sources.
RHGEN_IMAGE = os.environ.get("RHGEN_TEST_IMAGE", f"rhgen:test-{hashlib.sha1(str(REPO).encode(), usedforsecurity=False).hexdigest()[:8]}")
BACKEND_IMAGE = "rhgen-test-busybox:2"  # bump when APPLETS change: the image is cached by name
BUSYBOX = "/bin/busybox"
# The busybox applets the backend image needs: sh for the command line, httpd to serve, hostname to say who answers.
APPLETS = ("sh", "httpd", "hostname", "sleep", "cat", "echo", "mkdir", "mv", "rm", "chmod", "ps", "nc", "wget", "ls", "kill")


# Checks that run the docker CLI cost a process each: poll them 10 times a second, not 50.
wait_for = functools.partial(net.wait_for, interval=0.1)


class DockerUnavailable(Exception):
    """No Docker daemon answers: a skip on a developer's machine, a failure in CI."""


def docker_cli() -> str:
    found = shutil.which("docker")
    if not found:
        raise DockerUnavailable("the docker client is not installed (apt-get install docker.io)")
    return found


def daemon_answers(timeout: float = 20.0) -> None:
    """Wait (bounded) until `docker version` reaches the daemon; DockerUnavailable with the reason otherwise."""
    cli = docker_cli()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        done = subprocess.run([cli, "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True,
                              timeout=30)
        if done.returncode == 0:
            return
        last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        time.sleep(0.5)
    raise DockerUnavailable(f"no Docker daemon answers ({last}); .ci/run starts one")


def docker(*args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> str:  # noqa: A002
    """Run the docker client; its stdout, stripped. A failure raises with docker's own message."""
    done = subprocess.run([docker_cli(), *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


def image_exists(name: str) -> bool:
    return subprocess.run([docker_cli(), "image", "inspect", name], capture_output=True).returncode == 0


def build_backend_image() -> str:
    """A 1 MB image of Debian's static busybox: `httpd` answers with the container's host name."""
    if image_exists(BACKEND_IMAGE):
        return BACKEND_IMAGE
    if not os.path.exists(BUSYBOX):
        raise DockerUnavailable(f"{BUSYBOX} is missing (apt-get install busybox-static)")
    with tempfile.TemporaryDirectory() as folder:
        archive = Path(folder) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(BUSYBOX, arcname="bin/busybox")
            for applet in APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
            for empty in ("www", "tmp", "etc"):
                entry = tarfile.TarInfo(empty)
                entry.type, entry.mode = tarfile.DIRTYPE, 0o1777
                tar.addfile(entry)
        docker("import", "--change", 'CMD ["/bin/sh"]', str(archive), BACKEND_IMAGE, timeout=300)
    return BACKEND_IMAGE


def build_rhgen_image() -> str:
    """The image from the repository's Dockerfile through docker/build.sh; Docker's cache makes a
    rebuild of unchanged sources quick. Set RHGEN_TEST_IMAGE to test an image built elsewhere."""
    if "RHGEN_TEST_IMAGE" in os.environ:
        if not image_exists(RHGEN_IMAGE):
            raise AssertionError(f"RHGEN_TEST_IMAGE={RHGEN_IMAGE} does not exist")
        return RHGEN_IMAGE
    done = subprocess.run(
        ["sh", str(REPO / "docker" / "build.sh"), RHGEN_IMAGE, "--quiet"],
        env={**os.environ, "SUPERCRONIC_VERSION": os.environ.get("SUPERCRONIC_VERSION", "none")},
        capture_output=True, text=True, timeout=1500,
    )
    if done.returncode != 0:
        raise AssertionError(f"docker/build.sh failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return RHGEN_IMAGE


def join_swarm() -> bool:
    """Make sure this daemon manages a swarm: True when a single-node swarm was made here
    (`docker swarm init --advertise-addr 127.0.0.1`), to be left again with leave_swarm();
    False when the daemon already managed one, which must never be left.
    DockerUnavailable when it is in a swarm but not a manager."""
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}/{{.Swarm.ControlAvailable}}")
    if state.startswith("inactive/"):
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
        return True
    if state != "active/true":
        raise DockerUnavailable(f"the Docker daemon is not a swarm manager ({state})")
    return False


def leave_swarm() -> None:
    docker("swarm", "leave", "--force", check=False)


BACKEND_COMMAND = ("sh", "-c", "hostname > /www/index.html; exec httpd -f -p 80 -h /www")


class DockerLab:
    """Containers, networks and volumes of one test session, all labelled and all removed at close()."""

    def __init__(self) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        self.prefix = f"rt{self.run_id[:6]}"  # names stay short and unique to this run
        self._stacks: list[str] = []

    @property
    def route_label(self) -> str:
        """A RANCHER_LABEL of this lab alone: the daemon is shared with other tests and developers."""
        return f"{self.prefix}.http"

    @property
    def label(self) -> str:
        return f"{LABEL}={self.run_id}"

    def name(self, base: str) -> str:
        return f"{self.prefix}-{base}"

    def network(self, base: str, *options: str) -> str:
        name = self.name(base)
        docker("network", "create", "--label", self.label, *options, name)
        return name

    def volume(self, base: str) -> str:
        name = self.name(base)
        docker("volume", "create", "--label", self.label, name)
        return name

    def run(self, image: str, *command: str, name: str | None = None, network: str | None = None,
            labels: dict[str, str] | None = None, options: Sequence[str] = ()) -> str:
        """`docker run -d` with the run's label; the container's id."""
        args = ["run", "-d", "--label", self.label]
        if name:
            args += ["--name", name]
        if network:
            args += ["--network", network]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        return docker(*args, *options, image, *command)

    def backend(self, name: str, network: str, labels: dict[str, str] | None = None,
                options: Sequence[str] = ()) -> str:
        """A busybox httpd on port 80 answering its host name (the container's name unless options say)."""
        return self.run(BACKEND_IMAGE, *BACKEND_COMMAND, name=name, network=network, labels=labels,
                        options=["--hostname", name, *options])

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(docker("inspect", container))[0]

    def ip(self, container: str, network: str) -> str:
        return self.inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"]

    def logs(self, container: str) -> str:
        done = subprocess.run([docker_cli(), "logs", container], capture_output=True, text=True, timeout=30)
        return done.stdout + done.stderr

    def published_port(self, container: str, port: str = "80/tcp") -> int:
        bindings = self.inspect(container)["NetworkSettings"]["Ports"][port]
        return int(bindings[0]["HostPort"])

    # --- swarm mode: services and stacks (the swarm fixture makes sure there is a swarm) ---------

    def service(self, base: str, *options: str, command: Sequence[str] = BACKEND_COMMAND,
                image: str = BACKEND_IMAGE) -> str:
        """`docker service create` of the busybox httpd (its replicas answer their task's host name),
        labelled; returns the service name. Does not wait: use wait_for(lab.running(name, n))."""
        name = self.name(base)
        docker("service", "create", "--detach", "--quiet", "--name", name, "--label", self.label,
               "--container-label", self.label, *options, image, *command)
        return name

    def stack(self, base: str, compose_file: Path, env: dict[str, str] | None = None) -> str:
        """`docker stack deploy -c FILE` under this run's prefix; `docker stack rm` at close()."""
        name = self.name(base)
        self._stacks.append(name)
        done = subprocess.run([docker_cli(), "stack", "deploy", "--compose-file", str(compose_file), name],
                              capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
        if done.returncode != 0:
            raise AssertionError(f"docker stack deploy {name}: {done.stderr.strip()}")
        return name

    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks as `docker inspect` shows them, running ones (desired and actual) only."""
        ids = docker("service", "ps", "-q", "--filter", "desired-state=running", service).split()
        tasks = json.loads(docker("inspect", *ids)) if ids else []
        return [t for t in tasks if t["Status"]["State"] == "running"]

    def running(self, service: str, count: int) -> Callable[[], list[dict[str, Any]]]:
        """A check for wait_for: the service has exactly `count` running tasks (returns them)."""
        def check() -> list[dict[str, Any]]:
            tasks = self.tasks(service)
            return tasks if len(tasks) == count else []
        return check

    def close(self) -> None:
        """Remove every stack, service, container, then network and volume, of this run (images stay as a cache)."""
        where = ["--filter", f"label={self.label}"]
        for stack in self._stacks:
            docker("stack", "rm", stack, check=False)
        services = docker("service", "ls", "-q", *where, check=False).split() if self._swarm() else []
        if services:
            docker("service", "rm", *services, check=False)
        if self._stacks or services:
            # A network is removable only once the tasks on it are gone.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._leftover_tasks():
                time.sleep(0.5)
        containers = docker("ps", "-aq", *where, check=False).split()
        if containers:
            docker("rm", "-f", "-v", *containers, check=False, timeout=120)
        for kind in ("network", "volume"):
            names = docker(kind, "ls", "-q", *where, check=False).split()
            if kind == "network" and self._stacks:  # stack networks carry the stack's label, not ours
                for stack in self._stacks:
                    names += docker(kind, "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack}",
                                    check=False).split()
            if names:
                docker(kind, "rm", *names, check=False)

    def _swarm(self) -> bool:
        return docker("info", "--format", "{{.Swarm.ControlAvailable}}", check=False) == "true"

    def _leftover_tasks(self) -> list[str]:
        """Containers of this run's services and stacks still on the host."""
        return docker("ps", "-aq", "--filter", f"name={self.prefix}", "--filter", "label=com.docker.swarm.task.id",
                      check=False).split()


class PrivateDaemon:
    """A second dockerd of one test's own, on its own socket, data and exec roots and its own empty
    bridge, without iptables: containers run with --network none only. (--bridge=none would make it
    delete the shared daemon's docker0 at start, as dockerd does when its bridge is disabled.) Stopping and starting it
    again is a daemon restart the shared daemon is spared. close() kills it and removes everything,
    also after a failure."""

    def __init__(self, image: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rhd-", dir="/tmp"))  # unix socket paths are short
        self.socket = str(self.folder / "docker.sock")
        self.host = f"unix://{self.socket}"
        self.pidfile = self.folder / "docker.pid"
        self.process: subprocess.Popen | None = None
        self.bridge = f"rhd{uuid.uuid4().hex[:8]}"
        try:
            # TEST-NET-1 (RFC 5737): an address nothing routes to; no container joins this bridge anyway.
            subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True, capture_output=True)
            subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", self.bridge], check=True, capture_output=True)
            self.start()
            # The image comes from the shared daemon's cache: nothing is pulled.
            saved = subprocess.run([docker_cli(), "save", image], capture_output=True, timeout=120, check=True).stdout
            subprocess.run([docker_cli(), "-H", self.host, "load", "-q"], input=saved, capture_output=True,
                           timeout=120, check=True)
        except BaseException:
            self.close()
            raise

    def docker(self, *args: str, check: bool = True) -> str:
        return docker("-H", self.host, *args, check=check)

    def start(self) -> None:
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise DockerUnavailable("dockerd is not installed")
        with open(self.folder / "dockerd.log", "ab") as log:
            self.process = subprocess.Popen(
                [dockerd, "-H", self.host, "--data-root", str(self.folder / "data"),
                 "--exec-root", str(self.folder / "exec"), "--pidfile", str(self.pidfile),
                 f"--bridge={self.bridge}", "--iptables=false", "--ip-masq=false", "--storage-driver", "vfs"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        wait_for(self._answers, 30, f"private dockerd on {self.socket} ({self.folder / 'dockerd.log'})", interval=0.2)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise DockerUnavailable(f"private dockerd exited {self.process.returncode}: "
                                    f"{(self.folder / 'dockerd.log').read_text()[-2000:]}")
        return docker("-H", self.host, "version", "--format", "{{.Server.Version}}", check=False, timeout=10) != ""

    def stop(self) -> None:
        """SIGTERM, as `systemctl stop docker` does; waits until dockerd (and its containerd) are gone."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait(10)

    def close(self) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                self.docker("rm", "-f", *self.docker("ps", "-aq", check=False).split(), check=False)
            self.stop()
            if self.process is not None:
                try:  # containerd and shims dockerd started live in its session
                    os.killpg(self.process.pid, 9)
                except ProcessLookupError:
                    pass
        finally:
            with open("/proc/mounts") as mounts:
                inside = [line.split()[1] for line in mounts if line.split()[1].startswith(str(self.folder))]
            for mount in sorted(inside, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True)
            shutil.rmtree(self.folder, ignore_errors=True)
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class SocketRecorder:
    """socat between a client and the daemon's socket, writing every request it carries to a log:
    a way to count the API calls rhgen makes to the real daemon."""

    def __init__(self, target: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="rhs-", dir="/tmp"))
        self.socket = str(self.folder / "recorded.sock")
        self.host = f"unix://{self.socket}"
        self.log = self.folder / "socat.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                ["socat", "-v", f"UNIX-LISTEN:{self.socket},fork", f"UNIX-CONNECT:{target}"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
            )
        wait_for(lambda: os.path.exists(self.socket), 10, "socat to listen")

    def requests(self) -> list[str]:
        """Request lines ("GET /containers/json?... HTTP/1.1") seen so far."""
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines() if line.split(" ", 1)[0] in ("GET", "POST", "HEAD", "DELETE")]

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)
