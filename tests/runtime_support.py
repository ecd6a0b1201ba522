"""Real pieces for the runtime tests: HTTP backends and a Rancher metadata service on 127.0.0.x,
the entrypoint as a process group, the haproxy master CLI, and a process sweep by marker.
Test modules import the fixtures `procs` and `socket_dir` from here.

Nothing here imitates haproxy, the entrypoint or the network: the servers are real sockets,
the processes are real processes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO / "entrypoint.sh"
RELOAD_HELPER = REPO / "rhgen-reload"
VENV_BIN = Path(sys.executable).parent  # where `rhgen` is installed next to this Python
MARKER_VAR = "RHGEN_TEST_MARKER"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # a server not up yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached within {timeout} s (last: {last!r})")


# --- HTTP servers ----------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the load test opens many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # An old haproxy worker closing its idle server connections is normal on a reload.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def start_backend(ip: str, port: int, name: str) -> ThreadingHTTPServer:
    """An HTTP/1.1 keep-alive server answering every GET with its own name; /slow takes 1.5 s."""
    body = f"{name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path.startswith("/slow"):
                time.sleep(1.5)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return _serve(_Server((ip, port), Handler))


@dataclass
class Metadata:
    """What the metadata service answers; tests change it while the service runs."""

    containers: list[dict[str, Any]] = field(default_factory=list)
    service_metadata: dict[str, Any] | None = None
    requests: int = 0

    def write_file(self, path: Path) -> None:
        """The same answers as a METADATA_FILE (renamed into place, like any careful writer)."""
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"containers": self.containers, "self_service_metadata": self.service_metadata}))
        os.replace(temp, path)


def start_metadata_service(metadata: Metadata, port: int) -> ThreadingHTTPServer:
    """Rancher 1.x metadata API: /latest/containers and /latest/self/service/metadata (404 when unset)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802
            metadata.requests += 1
            if self.path == "/latest/containers":
                self._json(200, metadata.containers)
            elif self.path == "/latest/self/service/metadata" and metadata.service_metadata is not None:
                self._json(200, metadata.service_metadata)
            else:
                self._json(404, {"code": 404, "message": "Not found", "type": "error"})

        def _json(self, status: int, data: Any) -> None:
            body = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    return _serve(_Server(("127.0.0.1", port), Handler))


def container(stack: str, ip: str, port: int, service: str = "web", index: int = 1, **extra: Any) -> dict[str, Any]:
    """One element of /containers, running and routable unless `extra` says otherwise."""
    name = f"{stack}-{service}-{index}"
    item = {
        "name": name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "stack_name": stack,
        "service_name": service,
        "primary_ip": ip,
        "ips": [ip],
        "state": "running",
        "health_state": None,
        "labels": {"map-public-http": str(port)},
    }
    item.update(extra)
    return item


# --- requests through haproxy ----------------------------------------------------------------


def get(port: int, host: str, path: str = "/", timeout: float = 3.0, address: str = "127.0.0.1") -> tuple[int, str]:
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def routes_to(port: int, host: str, body: str) -> Callable[[], bool]:
    """A check for wait_until: `host` answers 200 with `body`."""

    def check() -> bool:
        try:
            return get(port, host, timeout=1.0) == (200, body)
        except OSError:
            return False

    return check


# --- the haproxy master CLI ------------------------------------------------------------------


def master_command(socket_path: str, command: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # end of input: the master answers, then closes
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def show_proc(socket_path: str) -> str:
    """`show proc`, retried: the master CLI refuses connections while the master re-executes itself."""
    return wait_until(lambda: master_command(socket_path, "show proc"), 10, what="master CLI answers")


def _master_line(socket_path: str) -> list[str]:
    for line in show_proc(socket_path).splitlines():
        words = line.split()
        if len(words) > 4 and words[1] == "master":
            return words
    raise AssertionError("no master line in show proc")


def master_reloads(socket_path: str) -> tuple[int, int]:
    """(reloads, failed) from the master's `show proc` line."""
    words = _master_line(socket_path)
    return int(words[2]), int(words[4].rstrip("]"))


def master_pid(socket_path: str) -> int:
    return int(_master_line(socket_path)[0])


def current_worker(socket_path: str) -> int:
    """Pid of the worker that serves now (the first under "# workers")."""
    lines = show_proc(socket_path).splitlines()
    start = lines.index("# workers")
    return int(lines[start + 1].split()[0])


# --- processes -------------------------------------------------------------------------------


def marked_pids(marker: str) -> list[int]:
    """Every process whose environment carries this marker: descendants that escaped the group too."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def terminate_and_wait(self, timeout: float = 20.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)


class Processes:
    """Starts processes in their own session with a marker; `cleanup` kills whatever is left."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.marker = uuid.uuid4().hex
        self.started: list[Proc] = []

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> Proc:
        env = {**env, MARKER_VAR: self.marker}
        stdout, stderr = self.folder / f"{name}.out", self.folder / f"{name}.err"
        # Files, not pipes: haproxy logs every request to stdout and must never block on it.
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            popen = subprocess.Popen(  # noqa: S603 - test processes, argument lists
                argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        proc = Proc(popen, stdout, stderr)
        self.started.append(proc)
        return proc

    def leftovers(self) -> list[str]:
        names = []
        for pid in marked_pids(self.marker):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                names.append(f"{pid} {command}")
        return names

    def cleanup(self) -> None:
        for proc in self.started:  # shown by pytest when the test failed
            print(f"--- {proc.stdout.stem} (last lines) ---")
            print("\n".join(proc.log().splitlines()[-25:]))
        for proc in self.started:
            if proc.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
        for pid in marked_pids(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Processes started by a test; whatever is left of them is killed at its end."""
    processes = Processes(tmp_path)
    yield processes
    processes.cleanup()


@pytest.fixture
def socket_dir() -> Iterator[str]:
    """A folder for unix sockets: pytest's tmp paths can pass the 108-byte limit of a socket path."""
    folder = tempfile.mkdtemp(prefix="rhgen-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def base_env(folder: Path, socket_dir: str, http_port: int, **settings: str) -> dict[str, str]:
    """The environment of an entrypoint under test: temp paths, an unprivileged port, 1 s period."""
    env = {
        # haproxy lives in /usr/sbin on Debian, which not every PATH holds
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}:/usr/local/sbin:/usr/sbin:/sbin",
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        "STACK_DOMAIN": "dev.tld",
        "HTTP_PORT": str(http_port),
        "BIND_ADDRESS": "127.0.0.1",
        "HAPROXY_CONFIG": str(folder / "haproxy.cfg"),
        "HAPROXY_BACKEND_CONFIG": str(folder / "backends.cfg"),
        "HAPROXY_DOMAIN_MAP": str(folder / "domain.map"),
        "HAPROXY_SSL_CERT": str(folder / "haproxy.pem"),
        "HAPROXY_MASTER_SOCKET": f"{socket_dir}/master.sock",
        "RHGEN_SUPERCRONIC": "supercronic-absent-in-tests",  # the plain loop, wherever supercronic exists
        "RHGEN_INTERVAL": "1",
        "RHGEN_RETRY_MAX": "1",
        "RHGEN_CONNECT_TIMEOUT": "1",
        "RHGEN_READ_TIMEOUT": "2",
        "RHGEN_RETRIES": "0",
    }
    env.update(settings)
    return env


@contextlib.contextmanager
def servers(*started: ThreadingHTTPServer) -> Iterator[None]:
    try:
        yield
    finally:
        for server in started:
            server.shutdown()
            server.server_close()
