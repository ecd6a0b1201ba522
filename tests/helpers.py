"""What the tests are built from: Rancher containers from a few arguments, the demo environment,
a real metadata HTTP server, real backend HTTP servers, rhgen as a subprocess and real haproxy.
conftest.py wraps these in fixtures; a test module that wants a longer-lived copy uses them directly."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOMAIN = "dev.tld"
LABEL = "map-public-http"
PROXY_LABEL = "proxy_protocol"
NOT_FOUND = {"code": 404, "message": "Not found", "type": "error"}
POLL = 0.02  # serve_forever's poll interval: shutdown() waits up to this long
CONTAINERS = "/latest/containers"
SERVICE_METADATA = "/latest/self/service/metadata"


def container(
    stack: str,
    service: str,
    ip: str | None,
    port: int | str | None,
    state: str = "running",
    health: str | None = None,
    labels: dict[str, Any] | None = None,
    name: str | None = None,
    uuid: str | None = None,
) -> dict[str, Any]:
    """One element of Rancher's /containers answer, with only the fields that matter.

    `port` is the value of the routing label (a str is used as is, None leaves the label off);
    `labels` are added on top. uuid is derived from the name, so equal input gives equal output.
    """
    name = name or f"{stack}-{service}-{ip}"
    all_labels: dict[str, Any] = {
        "io.rancher.stack.name": stack,
        "io.rancher.stack_service.name": f"{stack}/{service}",
    }
    if port is not None:
        all_labels[LABEL] = port if isinstance(port, str) else str(port)
    all_labels.update(labels or {})
    return {
        "name": name,
        "uuid": uuid or str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, name)),
        "stack_name": stack,
        "service_name": service,
        "primary_ip": ip,
        "ips": [ip] if ip else [],
        "state": state,
        "health_state": health,
        "labels": all_labels,
    }


def demo_environment(ports: dict[str, int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The sample environment of demo/metadata.json, with the backends' real ports (ip -> port).

    app1: two healthy web containers (.11, .12), aliases www and someotheralias;
    App-R124: one container (.21) with proxy_protocol: send-proxy; app-r125: stopped (.31);
    app-r126: unhealthy (.41) and healthy (.42); plus containers without the routing label.
    """
    containers = [
        container("app-r125", "web", "127.0.0.31", ports["127.0.0.31"], state="stopped", name="app-r125-web-1"),
        container("app1", "web", "127.0.0.11", ports["127.0.0.11"], health="healthy", name="app1-web-1"),
        container("lb", "HTTP", "127.0.0.2", None, name="lb-HTTP-1"),
        container("app1", "db", "127.0.0.13", None, name="app1-db-1"),
        container("app-r126", "web", "127.0.0.41", ports["127.0.0.41"], health="unhealthy", name="app-r126-web-1"),
        container("app1", "web", "127.0.0.12", ports["127.0.0.12"], health="healthy", name="app1-web-2"),
        container(
            "App-R124", "web", "127.0.0.21", ports["127.0.0.21"],
            labels={PROXY_LABEL: "send-proxy"}, name="App-R124-web-1",
        ),
        container("app-r126", "web", "127.0.0.42", ports["127.0.0.42"], health="healthy", name="app-r126-web-2"),
    ]
    metadata = {"aliases": {"app1": ["www", "someotheralias"]}}
    return containers, metadata


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound, read back, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]



# --- metadata server -------------------------------------------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before the answer
    hang: bool = False  # accept the request, never answer (until the test ends)
    drip: float = 0.0  # seconds between single bytes of the body
    cut: int | None = None  # announce the whole body, send only this many bytes, close
    chunked: bool = False  # Transfer-Encoding: chunked, a few bytes per chunk (as Go's server does for big answers)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    time: float = field(default_factory=time.monotonic)  # when it arrived (for retry backoff)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetadataServer:
    """Answers GETs per path as the test sets them; records every request with its headers."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[Request] = []
        self.released = threading.Event()  # ends every hang and delay at teardown
        self.set_json(CONTAINERS, [])
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

            def do_GET(self) -> None:  # noqa: N802
                owner.requests.append(Request(self.path, dict(self.headers.items())))
                answer = owner.answers.get(self.path) or Answer(404, json.dumps(NOT_FOUND).encode())
                if answer.hang:
                    owner.released.wait(30)
                    self.close_connection = True
                    return
                if answer.delay and owner.released.wait(answer.delay):
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(answer.body), 50):
                        piece = answer.body[i : i + 50]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                if answer.cut is not None:
                    self.wfile.write(answer.body[: answer.cut])
                    self.close_connection = True
                elif answer.drip:
                    for i in range(len(answer.body)):
                        self.wfile.write(answer.body[i : i + 1])
                        self.wfile.flush()
                        if owner.released.wait(answer.drip):
                            return
                else:
                    self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(POLL,), daemon=True)
        self.thread.start()

    def set(self, path: str, **answer: Any) -> None:
        self.answers[path] = Answer(**answer)

    def set_json(self, path: str, data: Any, status: int = 200, **answer: Any) -> None:
        self.set(path, status=status, body=json.dumps(data).encode(), **answer)

    def containers(self, items: list[Any]) -> None:
        self.set_json(CONTAINERS, items)

    def service_metadata(self, data: Any) -> None:
        self.set_json(SERVICE_METADATA, data)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# --- backend servers -------------------------------------------------------------------------


class _Backend(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ip: str, name: str, proxy_protocol: bool) -> None:
        self.name = name
        self.ip = ip
        self.proxy_protocol = proxy_protocol
        self.proxy_lines: list[str] = []  # PROXY headers received, without CRLF
        self.hits = 0
        self.paths: list[str] = []  # every GET's path, health checks included
        self.status: dict[str, int] = {}  # path -> status to answer instead of 200 (a failing /healthz)
        self.drop = False  # read the request, count it, close without an answer (the app "crashed" on it)
        self.last_headers: dict[str, str] = {}
        self.errors: list[str] = []
        super().__init__((ip, 0), _BackendHandler)
        self.port = self.server_address[1]


class _BackendHandler(http.server.BaseHTTPRequestHandler):
    server: _Backend

    def handle(self) -> None:
        if self.server.proxy_protocol:
            line = self.rfile.readline(108)  # a v1 header is at most 107 bytes, CRLF included
            if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n"):
                self.server.errors.append(f"expected a PROXY header, got {line[:40]!r}")
                self.wfile.write(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 16\r\n\r\nno PROXY header\n")
                return
            self.server.proxy_lines.append(line[:-2].decode("ascii"))
        super().handle()

    def do_GET(self) -> None:  # noqa: N802
        self.server.hits += 1
        self.server.paths.append(self.path)
        self.server.last_headers = {k.lower(): v for k, v in self.headers.items()}
        if self.server.drop:
            self.close_connection = True
            return
        body = self.server.name.encode()
        self.send_response(self.server.status.get(self.path, 200))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class BackendServers:
    """Starts tiny HTTP servers on given loopback addresses; each answers 200 with its name."""

    def __init__(self) -> None:
        self.servers: dict[str, _Backend] = {}

    def start(self, ip: str, name: str | None = None, proxy_protocol: bool = False) -> _Backend:
        server = _Backend(ip, name or ip, proxy_protocol)
        threading.Thread(target=server.serve_forever, args=(POLL,), daemon=True).start()
        self.servers[ip] = server
        return server

    def __getitem__(self, ip: str) -> _Backend:
        return self.servers[ip]

    def freeze(self, ip: str) -> socket.socket:
        """The server at `ip` stops answering, its port stays open: a listening socket that never
        accepts (a hung container). The caller closes the returned socket."""
        server = self.servers[ip]
        server.shutdown()
        server.server_close()
        hung = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hung.bind((ip, server.port))
        hung.listen(64)
        return hung

    def ports(self) -> dict[str, int]:
        return {ip: s.port for ip, s in self.servers.items()}

    def close(self) -> None:
        for server in self.servers.values():
            server.shutdown()
            server.server_close()


DEMO_NAMES = {
    "127.0.0.11": "app1-web-1",
    "127.0.0.12": "app1-web-2",
    "127.0.0.21": "App-R124-web-1",
    "127.0.0.31": "app-r125-web-1",
    "127.0.0.41": "app-r126-web-1",
    "127.0.0.42": "app-r126-web-2",
}


def start_demo(metadata_server: MetadataServer, backend_servers: BackendServers) -> BackendServers:
    """Serve the demo environment, with a live backend for every labelled container (the stopped
    and unhealthy ones too, so traffic sent to them would show)."""
    for ip, name in DEMO_NAMES.items():
        backend_servers.start(ip, name, proxy_protocol=(ip == "127.0.0.21"))
    containers, metadata = demo_environment(backend_servers.ports())
    metadata_server.containers(containers)
    metadata_server.service_metadata(metadata)
    return backend_servers


# --- running rhgen ---------------------------------------------------------------------------


def run_rhgen(args: list[str], env: dict[str, str] | None, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m rhgen ...` in cwd, with only PATH inherited from the test run."""
    return subprocess.run(
        [sys.executable, "-m", "rhgen", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})},
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


@dataclass
class Target:
    """The live output folder and the environment that points rhgen at it."""

    folder: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.folder / "haproxy.cfg"

    @property
    def backends(self) -> Path:
        return self.folder / "backends.cfg"

    @property
    def map(self) -> Path:
        return self.folder / "domain.map"

    @property
    def outputs(self) -> list[Path]:
        return [self.config, self.backends, self.map]

    def snapshot(self) -> dict[str, tuple[bytes, int, int, int]]:
        """content, inode, mtime (ns) and mode of every file in the folder."""
        result = {}
        for path in sorted(self.folder.iterdir()):
            stat = path.stat()
            result[path.name] = (path.read_bytes(), stat.st_ino, stat.st_mtime_ns, stat.st_mode)
        return result


def make_target(folder: Path, metadata_server: MetadataServer) -> Target:
    """An empty live folder and the environment pointing rhgen at it and at the metadata server."""
    folder.mkdir()
    port = free_port()
    env = {
        "STACK_DOMAIN": DOMAIN,
        "BIND_ADDRESS": "127.0.0.1",
        "HTTP_PORT": str(port),
        "HAPROXY_CONFIG": str(folder / "haproxy.cfg"),
        "HAPROXY_BACKEND_CONFIG": str(folder / "backends.cfg"),
        "HAPROXY_DOMAIN_MAP": str(folder / "domain.map"),
        "HAPROXY_SSL_CERT": str(folder / "haproxy.pem"),
        "RANCHER_API_HOST": metadata_server.host,
        "RANCHER_PROXY_LABEL": PROXY_LABEL,
        "RHGEN_RETRIES": "0",
        "RHGEN_CONNECT_TIMEOUT": "2",
        "RHGEN_READ_TIMEOUT": "5",
    }
    return Target(folder, port, env)


# --- haproxy ---------------------------------------------------------------------------------


class Haproxy:
    """haproxy -W -db -f haproxy.cfg -f backends.cfg on a target's files, and real requests to it."""

    def __init__(self, target: Target, log: Path) -> None:
        self.target = target
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> Haproxy:
        """Start haproxy on the generated files and wait until its port accepts connections."""
        assert self.target.config.is_file() and self.target.backends.is_file(), "generate the files first"
        command = [shutil.which("haproxy") or "haproxy", "-W", "-db"]
        command += ["-f", str(self.target.config), "-f", str(self.target.backends)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"haproxy exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.target.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"haproxy did not listen on {self.target.port}:\n{self.log.read_text()}")
                time.sleep(0.02)

    def get(self, host: str, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, str]:
        """One real HTTP request to haproxy with this Host header -> (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.target.port, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": host, **(headers or {})})
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def raw_request(port: int, head: bytes) -> tuple[int, str]:
    """Send exactly these request bytes (http.client would refuse or fix most of them) -> (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")
