"""Real processes and servers the watch, Docker, routes and runtime-API tests drive (also used by bench/).

- RancherMetadata: an HTTP server answering /<version>/containers, /self/service/metadata and
  /version, including the long poll (?wait=true&value=<v>&maxWait=<s>).
- DockerDaemon: an HTTP server on a unix socket answering /containers/json,
  /containers/<id>/json and the chunked /events stream, from small dicts.
- Haproxy: `haproxy -W -db -S <master socket>` on generated files, with the reload counter.
- App: a tiny HTTP server on 127.0.0.x that answers with its own name (a "container").

Everything binds to loopback, picks its port at run time and stops in close().
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import queue
import re
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

LABEL = "map-public-http"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll predicate() until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class _Threaded(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer (a stopped watch, a long poll given up)


class _Quiet(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def send_json(self, status: int, data: Any) -> None:
        self.send_body(status, json.dumps(data).encode(), "application/json")

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# --- containers ------------------------------------------------------------------------------


class App:
    """One "container": an HTTP server on ip:random port answering 200 with its name
    (/slow: after 1.5 s, /slow/<n>: after n seconds)."""

    def __init__(self, name: str, ip: str = "127.0.0.1"):
        self.name, self.ip = name, ip

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802
                if self.path.startswith("/slow"):
                    time.sleep(float(self.path[6:] or 1.5))
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = _Threaded((ip, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def rancher_container(name: str, stack: str, ip: str, port: int | str | None, *, service: str = "web",
                      state: str = "running", health: str | None = None, **labels: str) -> dict[str, Any]:
    """A container as /<version>/containers lists it (the fields that matter, plus a few real ones)."""
    uuid = hashlib.sha1(name.encode()).hexdigest()[:8] + "-0000-4000-8000-" + hashlib.sha1(name.encode()).hexdigest()[:12]
    all_labels = {"io.rancher.stack.name": stack, "io.rancher.stack_service.name": f"{stack}/{service}", **labels}
    if port is not None:
        all_labels[LABEL] = str(port)
    return {
        "name": name, "uuid": uuid, "stack_name": stack, "service_name": service, "primary_ip": ip, "ips": [ip],
        "state": state, "health_state": health, "labels": all_labels, "create_index": 1, "host_uuid": "h-1",
    }


# --- Rancher metadata ------------------------------------------------------------------------


class RancherMetadata:
    """The Rancher 1.x metadata service, as far as rhgen reads it."""

    def __init__(self, version: str = "latest", port: int = 0):
        """port: 0 for a free one; a closed server's port to come back where it was (after refusals)."""
        self.api_version = version
        self.containers: list[dict[str, Any]] = []
        self.service_metadata: dict[str, Any] | None = None
        self.fail_status: int | None = None  # answer /containers with this status
        self.html_status: int | None = None  # answer every path (/version too) with an HTML page and this status
        self.max_hold = 120.0
        self.requests: list[str] = []
        self._serial = 0
        self._changed = threading.Condition()
        self._closing = False
        owner = self

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(self.path)
                owner._answer(self)
                if owner._closing:  # a closed service refuses: no keep-alive connection outlives it
                    self.close_connection = True

        self.server = _Threaded(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def version(self) -> str:
        return f"{self._serial}-{hashlib.sha1(str(self._serial).encode()).hexdigest()[:10]}"

    def set(self, containers: list[dict[str, Any]] | None = None, metadata: Any = ..., bump: bool = True) -> None:
        with self._changed:
            if containers is not None:
                self.containers = list(containers)
            if metadata is not ...:
                self.service_metadata = metadata
            if bump:
                self._serial += 1
                self._changed.notify_all()

    def add(self, *containers: dict[str, Any]) -> None:
        self.set(self.containers + list(containers))

    def _answer(self, handler: _Quiet) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        prefix = f"/{self.api_version}"
        path = url.path[len(prefix):] if url.path.startswith(prefix + "/") else None
        if self.html_status:  # a proxy in front of the service, answering for it
            handler.send_body(self.html_status, b"<html><body><h1>Bad Gateway</h1></body></html>", "text/html")
        elif path == "/containers":
            if self.fail_status:
                handler.send_json(self.fail_status, {"code": self.fail_status, "message": "error", "type": "error"})
            else:
                handler.send_json(200, self.containers)
        elif path == "/self/service/metadata" and self.service_metadata is not None:
            handler.send_json(200, self.service_metadata)
        elif path == "/version":
            handler.send_json(200, self._wait_version(query))
        else:
            handler.send_json(404, {"code": 404, "message": "Not found", "type": "error"})

    def _wait_version(self, query: dict[str, str]) -> str:
        if query.get("wait") != "true":
            return self.version
        hold = min(float(query.get("maxWait", "60")), 120.0, self.max_hold)
        deadline = time.monotonic() + hold
        with self._changed:
            while self.version == query.get("value") and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
            return self.version

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()


# --- Docker Engine ---------------------------------------------------------------------------


def docker_container(name: str, project: str | None, ip: str, port: int | str | None, *, service: str = "web",
                     status: str = "running", health: str | None = None, network: str | None = None,
                     **labels: str) -> dict[str, Any]:
    """A container as `docker inspect` shows it (the fields that matter, plus a few real ones)."""
    cid = hashlib.sha256(name.encode()).hexdigest()
    all_labels = dict(labels)
    if project is not None:
        all_labels.update({"com.docker.compose.project": project, "com.docker.compose.service": service,
                           "com.docker.compose.container-number": "1", "com.docker.compose.oneoff": "False"})
    if port is not None:
        all_labels[LABEL] = str(port)
    network = network or f"{project or 'bridge'}_default"
    state: dict[str, Any] = {
        "Status": status, "Running": status in ("running", "paused"), "Paused": status == "paused",
        "Restarting": status == "restarting", "OOMKilled": False, "Dead": False, "Pid": 4242 if status == "running" else 0,
        "ExitCode": 0, "Error": "", "StartedAt": "2024-05-01T10:00:00.000000000Z", "FinishedAt": "0001-01-01T00:00:00Z",
    }
    if health is not None:
        state["Health"] = {"Status": health, "FailingStreak": 0 if health == "healthy" else 3, "Log": []}
    endpoint = {
        "IPAMConfig": None, "Links": None, "Aliases": [name, service], "NetworkID": hashlib.sha256(network.encode()).hexdigest(),
        "EndpointID": hashlib.sha256(cid.encode()).hexdigest(), "Gateway": "172.18.0.1",
        "IPAddress": ip if status == "running" else "", "IPPrefixLen": 16, "IPv6Gateway": "",
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "MacAddress": "02:42:ac:12:00:02", "DriverOpts": None,
    }
    return {
        "Id": cid, "Created": "2024-05-01T09:59:59.000000000Z", "Path": "/docker-entrypoint.sh", "Args": [],
        "State": state, "Image": "sha256:" + "0" * 64, "Name": f"/{name}", "RestartCount": 0,
        "Config": {"Hostname": cid[:12], "Image": "nginx:alpine", "Labels": all_labels, "Env": []},
        "HostConfig": {"NetworkMode": network},
        "NetworkSettings": {"Bridge": "", "SandboxID": "", "Ports": {}, "Networks": {network: endpoint}},
    }


def _listed(inspect: dict[str, Any]) -> dict[str, Any]:
    """The /containers/json form of an inspect dict (what `docker ps --format json` is built from)."""
    state = inspect["State"]
    health = state.get("Health", {}).get("Status")
    # The texts Docker 20.10 writes (checked on the real daemon): the health is only in Status.
    shown = {"starting": "health: starting"}.get(health, health)
    status = "Up 3 seconds" + (f" ({shown})" if health else "") if state["Status"] == "running" else "Exited (0) 1 second ago"
    return {
        "Id": inspect["Id"], "Names": [inspect["Name"]], "Image": inspect["Config"]["Image"], "ImageID": inspect["Image"],
        "Command": "/docker-entrypoint.sh", "Created": 1714557599, "Ports": [], "Labels": inspect["Config"]["Labels"],
        "State": state["Status"], "Status": status, "HostConfig": {"NetworkMode": inspect["HostConfig"]["NetworkMode"]},
        "NetworkSettings": {"Networks": inspect["NetworkSettings"]["Networks"]}, "Mounts": [],
    }


class _UnixThreaded(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class DockerDaemon:
    """The Docker Engine API on a unix socket, as far as rhgen reads it."""

    def __init__(self, socket_path: str | Path):
        self.socket_path = str(socket_path)
        self.containers: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self.down = False  # answer every request with 500
        self.info: dict[str, Any] = {"Swarm": {"LocalNodeState": "inactive", "ControlAvailable": False}}  # GET /info
        self._streams: list[queue.SimpleQueue[Any]] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        owner = self

        class Handler(_Quiet):
            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(self.path)
                owner._answer(self)
                if owner._closing:  # a closed service refuses: no keep-alive connection outlives it
                    self.close_connection = True

        self.server = _UnixThreaded(self.socket_path, Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def put(self, *containers: dict[str, Any], action: str = "start") -> None:
        for container in containers:
            self.containers[container["Id"]] = container
            self.emit(container, action)

    def remove(self, container: dict[str, Any], action: str = "destroy") -> None:
        self.containers.pop(container["Id"], None)
        self.emit(container, action)

    def emit(self, container: dict[str, Any], action: str) -> None:
        now = time.time_ns()
        event = {
            "status": action, "id": container["Id"], "from": container["Config"]["Image"], "Type": "container",
            "Action": action, "scope": "local", "time": now // 10**9, "timeNano": now,
            "Actor": {"ID": container["Id"], "Attributes": {**container["Config"]["Labels"], "name": container["Name"][1:]}},
        }
        with self._lock:
            for stream in self._streams:
                stream.put(event)

    @property
    def streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def _answer(self, handler: _Quiet) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        path = re.sub(r"^/v1\.\d+", "", url.path)
        if self.down:
            handler.send_json(500, {"message": "server error"})
        elif path == "/containers/json":
            handler.send_json(200, self._list(query))
        elif match := re.fullmatch(r"/containers/([0-9a-f]+)/json", path):
            found = self.containers.get(match.group(1))
            handler.send_json(200, found) if found else handler.send_json(404, {"message": f"No such container: {match.group(1)}"})
        elif path == "/events":
            self._stream(handler)
        elif path == "/info":
            handler.send_json(200, self.info)
        else:
            handler.send_json(404, {"message": "page not found"})

    def _list(self, query: dict[str, str]) -> list[dict[str, Any]]:
        filters = json.loads(query.get("filters", "{}"))
        wanted = filters.get("label", [])
        listed = []
        for container in self.containers.values():
            labels = container["Config"]["Labels"]
            if query.get("all") not in ("1", "true") and container["State"]["Status"] != "running":
                continue
            if all((w.split("=", 1)[0] in labels) if "=" not in w else labels.get(w.split("=", 1)[0]) == w.split("=", 1)[1]
                   for w in wanted):
                listed.append(_listed(container))
        return listed

    def _stream(self, handler: _Quiet) -> None:
        stream: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._lock:
            self._streams.append(stream)
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.flush()
            while not self._closing.is_set():
                try:
                    event = stream.get(timeout=0.1)
                except queue.Empty:
                    continue
                data = json.dumps(event).encode() + b"\n"
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                handler.wfile.flush()
        except OSError:
            pass
        finally:
            with self._lock:
                self._streams.remove(stream)
            handler.close_connection = True

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(self.socket_path)


# --- HAProxy ---------------------------------------------------------------------------------


def unix_command(path: str, command: str) -> str:
    """One command to an haproxy CLI socket (master or stats), the answer as text."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # the master CLI answers once it sees the end of input
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class Haproxy:
    """haproxy in master-worker mode with a master socket, on rhgen's generated files."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.master_socket = str(folder / "master.sock")
        self.log = open(folder / "haproxy.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(  # noqa: S603
            ["haproxy", "-W", "-db", "-S", self.master_socket,
             "-f", str(folder / "haproxy.cfg"), "-f", str(folder / "backends.cfg")],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            wait_for(self._listening, timeout=10, what="haproxy to listen")
        except BaseException:
            self.close()  # nobody else holds this object yet
            raise

    @property
    def reload_command(self) -> str:
        return f"kill -USR2 {self.process.pid}"

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"haproxy exited: {(self.folder / 'haproxy.log').read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", self.port)) != 0:
                return False
        return bool(self.processes()[1])  # the master socket accepts a moment after its file appears

    def master(self, command: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return unix_command(self.master_socket, command)
            except (ConnectionRefusedError, ConnectionResetError, FileNotFoundError):
                # The master re-executes itself on every reload: its socket refuses for a moment.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def processes(self) -> tuple[int, list[int]]:
        """(reload counter of the master, pids of the current workers) from `show proc`."""
        reloads, workers, section = -1, [], "master"
        for line in self.master("show proc").splitlines():
            if line.startswith("# "):
                section = line[2:].strip()
                continue
            parts = line.split()
            if len(parts) >= 3 and parts[1] == "master":
                reloads = int(parts[2])
            elif len(parts) >= 2 and parts[1] == "worker" and section == "workers":
                workers.append(int(parts[0]))
        return reloads, workers

    @property
    def reloads(self) -> int:
        return self.processes()[0]

    def get(self, host: str, path: str = "/") -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": host, "Connection": "close"})
            answer = connection.getresponse()
            return answer.status, answer.read().decode()
        finally:
            connection.close()

    def wait_routes(self, host: str, body: str, timeout: float = 10.0) -> float:
        """Seconds until `host` answers 200 with `body` through haproxy."""
        def routed() -> bool:
            try:
                return self.get(host) == (200, body)
            except (OSError, http.client.HTTPException):
                return False  # a connection closed by a worker on its way out during a reload

        started = time.monotonic()
        wait_for(routed, timeout=timeout, interval=0.01, what=f"{host} -> {body}")
        return time.monotonic() - started

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()


# --- rhgen ------------------------------------------------------------------------------------


def rhgen_env(folder: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of an rhgen run writing into `folder` (nothing inherited but PATH)."""
    return {
        "PATH": os.environ["PATH"],
        "STACK_DOMAIN": "dev.tld",
        "BIND_ADDRESS": "127.0.0.1",
        "HTTP_PORT": str(port),
        "HAPROXY_CONFIG": str(folder / "haproxy.cfg"),
        "HAPROXY_BACKEND_CONFIG": str(folder / "backends.cfg"),
        "HAPROXY_DOMAIN_MAP": str(folder / "domain.map"),
        "HAPROXY_SSL_CERT": str(folder / "haproxy.pem"),
        "HAPROXY_SSL_CRT_LIST": str(folder / "crt-list.txt"),
        "RHGEN_RETRIES": "0",
        **settings,
    }


class Watch:
    """`rhgen watch` as a subprocess; its output lines are collected as they come."""

    def __init__(self, env: dict[str, str], *args: str, python: str | None = None):
        import sys

        self.process = subprocess.Popen(  # noqa: S603
            [python or sys.executable, "-m", "rhgen", "watch", *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_out(self, needle: str, count: int = 1, timeout: float = 10.0) -> None:
        def seen() -> bool:
            if self.process.poll() is not None and sum(needle in line for line in self.out) < count:
                raise AssertionError(f"rhgen watch exited {self.process.returncode}: {self.err}")
            return sum(needle in line for line in self.out) >= count

        wait_for(seen, timeout=timeout, what=f"{count}x {needle!r} in {self.out} / {self.err}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            self.close()
        for reader in self._readers:
            reader.join(timeout=2)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
