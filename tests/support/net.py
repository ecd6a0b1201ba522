"""Loopback plumbing every test and bench script shares: a free port, a bounded wait, one HTTP GET,
raw request bytes, one command to a unix CLI socket, and the threaded HTTP server they are built on."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (bound, read back, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def accepts(host: str, port: int) -> bool:
    """Whether something listens on host:port right now."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class Gone(AssertionError):
    """Raised by a wait_for check when waiting longer cannot help (the process exited)."""


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition", *, interval: float = 0.02,
             retry_on: tuple[type[BaseException], ...] = (OSError, AssertionError)) -> Any:
    """Poll `check` until it returns something truthy and return that; fail naming `what` after
    `timeout` seconds. Exceptions in `retry_on` (a server not up yet, a docker command failing
    while a container starts) count as "not yet"; Gone ends the wait at once."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Gone:
            raise
        except retry_on as exc:
            last = exc
        if last and not isinstance(last, BaseException):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(interval)


def get(port: int, host: str, path: str = "/", timeout: float = 5.0, address: str = "127.0.0.1",
        headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One real HTTP request with this Host header -> (status, body)."""
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def routes_to(port: int, host: str, body: str) -> Callable[[], bool]:
    """A check for wait_for: `host` answers 200 with `body`."""

    def check() -> bool:
        try:
            return get(port, host, timeout=1.0) == (200, body)
        except (OSError, http.client.HTTPException):
            return False  # a connection closed by a worker on its way out during a reload

    return check


def raw_request(port: int, head: bytes) -> tuple[int, str]:
    """Send exactly these request bytes (http.client would refuse or fix most of them) -> (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def unix_command(path: str, command: str, timeout: float = 5.0) -> str:
    """One command to an haproxy CLI socket (master or stats), the answer as text."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # the master CLI answers once it sees the end of input
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


class ThreadedServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the load tests open many connections at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away mid-answer (an old haproxy worker on a reload, a stopped watch,
        # a long poll given up) is normal; anything else is shown.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms delayed-ACK stall)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's naming
        pass

    def send_json(self, status: int, data: Any) -> None:
        self.send_body(status, json.dumps(data).encode(), "application/json")

    def send_body(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(server: http.server.HTTPServer) -> None:
    """Serve in a daemon thread; shutdown() waits up to the 0.02 s poll interval."""
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()


@contextlib.contextmanager
def closing_all(*things: Any) -> Iterator[None]:
    """Close every one of these (servers, apps) at the end of the block, even after a failure."""
    try:
        yield
    finally:
        for thing in things:
            thing.close()
