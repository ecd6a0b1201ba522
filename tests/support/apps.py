"""Backends: tiny real HTTP servers on 127.0.0.x, each a "container" answering 200 with its name
(with echo_path, its name and the path it received).

App serves HTTP/1.1 keep-alive (BackendServers' apps HTTP/1.0: a connection per request); /slow waits 1.5 s, /slow/<n> n seconds. It counts hits and paths
(health checks included), can answer a path with another status, drop requests unanswered, expect
a PROXY v1 header, or freeze (its port stays open, nothing answers)."""

from __future__ import annotations

import socket
import time

from .metadata import DEMO_NAMES, MetadataServer, demo_environment
from .net import QuietHandler, ThreadedServer, serve


class _Handler(QuietHandler):
    server: _AppServer

    def handle(self) -> None:
        app = self.server.app
        if app.proxy_protocol:
            line = self.rfile.readline(108)  # a v1 header is at most 107 bytes, CRLF included
            if not line.startswith(b"PROXY ") or not line.endswith(b"\r\n"):
                app.errors.append(f"expected a PROXY header, got {line[:40]!r}")
                self.wfile.write(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 16\r\n\r\nno PROXY header\n")
                return
            app.proxy_lines.append(line[:-2].decode("ascii"))
        super().handle()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        app = self.server.app
        app.hits += 1
        app.paths.append(self.path)
        app.last_headers = {k.lower(): v for k, v in self.headers.items()}
        if app.drop:
            self.close_connection = True
            return
        if self.path.startswith("/slow"):
            time.sleep(float(self.path[6:] or 1.5))
        body = f"{app.name} {self.path}" if app.echo_path else app.name
        self.send_body(app.status.get(self.path, 200), body.encode(), "text/plain")


class _OneShotHandler(_Handler):
    protocol_version = "HTTP/1.0"  # one request per connection: every request a fresh connection (and PROXY header)


class _AppServer(ThreadedServer):
    app: App


class App:
    """One "container": an HTTP server on ip:port (0: a free one) answering 200 with `name`."""

    def __init__(self, name: str, ip: str = "127.0.0.1", port: int = 0, proxy_protocol: bool = False,
                 keep_alive: bool = True, echo_path: bool = False) -> None:
        self.name, self.ip, self.proxy_protocol = name, ip, proxy_protocol
        self.echo_path = echo_path  # answer "<name> <path received>" (path routing tests)
        self.proxy_lines: list[str] = []  # PROXY headers received, without CRLF
        self.hits = 0
        self.paths: list[str] = []  # every GET's path, health checks included
        self.status: dict[str, int] = {}  # path -> status to answer instead of 200 (a failing /healthz)
        self.drop = False  # read the request, count it, close without an answer (the app "crashed" on it)
        self.last_headers: dict[str, str] = {}
        self.errors: list[str] = []
        self.server = _AppServer((ip, port), _Handler if keep_alive else _OneShotHandler)
        self.server.app = self
        self.port = self.server.server_address[1]
        serve(self.server)

    def freeze(self) -> socket.socket:
        """Stop answering, keep the port open: a listening socket that never accepts (a hung
        container). The caller closes the returned socket."""
        self.close()
        hung = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hung.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        hung.bind((self.ip, self.port))
        hung.listen(64)
        return hung

    def vanish(self) -> list[socket.socket]:
        """Stop answering even connections: the address of a container that is gone, where a SYN gets
        no answer at all (no RST). A listening socket that never accepts, with its one-place queue
        filled, drops every later SYN. The caller closes the returned sockets."""
        self.close()
        gone = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        gone.bind((self.ip, self.port))
        gone.listen(0)
        held = [gone]
        for _ in range(2):  # what the queue of listen(0) still takes
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            filler.connect_ex((self.ip, self.port))
            held.append(filler)
        return held

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class BackendServers:
    """The apps of one test (the backend_servers fixture), by address; all closed together."""

    def __init__(self) -> None:
        self.servers: dict[str, App] = {}

    def start(self, ip: str, name: str | None = None, proxy_protocol: bool = False) -> App:
        app = App(name or ip, ip, proxy_protocol=proxy_protocol, keep_alive=False)
        self.servers[ip] = app
        return app

    def __getitem__(self, ip: str) -> App:
        return self.servers[ip]

    def freeze(self, ip: str) -> socket.socket:
        return self.servers[ip].freeze()

    def ports(self) -> dict[str, int]:
        return {ip: s.port for ip, s in self.servers.items()}

    def close(self) -> None:
        for app in self.servers.values():
            app.close()


def start_demo(metadata_server: MetadataServer, backend_servers: BackendServers) -> BackendServers:
    """Serve the demo environment, with a live backend for every labelled container (the stopped
    and unhealthy ones too, so traffic sent to them would show)."""
    for ip, name in DEMO_NAMES.items():
        backend_servers.start(ip, name, proxy_protocol=(ip == "127.0.0.21"))
    containers, metadata = demo_environment(backend_servers.ports())
    metadata_server.set(containers, metadata)
    return backend_servers
