"""The Rancher 1.x metadata service, as far as rhgen reads it, and the containers it lists.

One server (MetadataServer) for every test and bench script: /<version>/containers,
/<version>/self/service/metadata and /<version>/version with the long poll
(?wait=true&value=<v>&maxWait=<s>), from a list of containers the test changes while it runs.
answer(path, ...) overrides one path with a prepared answer, including faults (a delay, a hang,
a dripped or cut body, chunked encoding) and rotating bodies (every run sees a change).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.parse
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .net import QuietHandler, ThreadedServer, serve

DOMAIN = "dev.tld"
LABEL = "map-public-http"
PROXY_LABEL = "proxy_protocol"
NOT_FOUND = {"code": 404, "message": "Not found", "type": "error"}
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


APP1 = [
    container("app1", "web", "127.0.0.11", 8080, health="healthy", name="app1-web-1"),
    container("app1", "web", "127.0.0.12", 8080, health="healthy", name="app1-web-2"),
]
APP2 = [container("app2", "web", "127.0.0.13", 9000, name="app2-web-1")]


DEMO_NAMES = {
    "127.0.0.11": "app1-web-1",
    "127.0.0.12": "app1-web-2",
    "127.0.0.21": "App-R124-web-1",
    "127.0.0.31": "app-r125-web-1",
    "127.0.0.41": "app-r126-web-1",
    "127.0.0.42": "app-r126-web-2",
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


PER_STACK = 5


def synthetic_containers(count: int, extra: int = 0) -> list[dict[str, Any]]:
    """`count` containers, about 5 per stack, shaped like Rancher's answer (with the fields a real
    one carries too); one in 50 is unroutable (stopped, unhealthy or a bad label). `extra` adds
    containers of one more stack at the end. Their addresses (127.1.x.y) are never contacted."""
    containers = []
    for index in range(count + extra):
        stack = f"app-r{index // PER_STACK}" if index < count else "app-new"
        state, health, port = "running", "healthy", "8080"
        if index < count and index % 50 == 7:
            state = "stopped"
        elif index < count and index % 50 == 17:
            health = "unhealthy"
        elif index < count and index % 50 == 27:
            port = "80a"
        name = f"{stack}-web-{index % PER_STACK + 1}"
        uuid = f"{index:08x}-0000-4000-8000-000000000000"
        item = container(stack, "web", f"127.1.{index // 250}.{index % 250 + 1}", port, state, health,
                         {"io.rancher.container.uuid": uuid}, name, uuid)
        item.update({
            "create_index": index, "dns": ["169.254.169.250"], "dns_search": [f"{stack}.rancher.internal", "rancher.internal"],
            "health_check": None, "host_uuid": "5c8a3e4f-1b2c-4d5e-8f90-a1b2c3d4e5f6", "hostname": name,
        })
        containers.append(item)
    return containers


def synthetic_aliases(count: int) -> dict[str, Any]:
    """Service metadata for synthetic_containers(count): aliases for every 20th stack."""
    return {"aliases": {f"app-r{n}": [f"www{n}", f"shop{n}.example.com"] for n in range(0, count // PER_STACK, 20)}}


def write_metadata_file(path: Path, containers: list[dict[str, Any]], service_metadata: Any = None) -> None:
    """The same answers as a METADATA_FILE (renamed into place, like any careful writer)."""
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"containers": containers, "self_service_metadata": service_metadata}))
    os.replace(temp, path)


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0  # seconds before the answer
    hang: bool = False  # accept the request, never answer (until the server closes)
    drip: float = 0.0  # seconds between single bytes of the body
    cut: int | None = None  # announce the whole body, send only this many bytes, close
    chunked: bool = False  # Transfer-Encoding: chunked, a few bytes per chunk (as Go's server does for big answers)
    headers: dict[str, str] = field(default_factory=dict)
    rotate: list[bytes] = field(default_factory=list)  # bodies answered in turn, one per request


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    time: float = field(default_factory=time.monotonic)  # when it arrived (for retry backoff)


class MetadataServer:
    """The metadata service on 127.0.0.1:<port> (0: a free one; a closed server's port to come back
    where it was). Records every request with its headers."""

    def __init__(self, version: str = "latest", port: int = 0, containers: list[dict[str, Any]] | None = None,
                 service_metadata: Any = None) -> None:
        self.api_version = version
        self.containers: list[dict[str, Any]] = list(containers or [])
        self.service_metadata: Any = service_metadata  # None: /self/service/metadata answers 404
        self.fail_status: int | None = None  # answer /containers with this status
        self.html_status: int | None = None  # answer every path (/version too) with an HTML page and this status
        self.max_hold = 120.0
        self.answers: dict[str, Answer] = {}  # full path -> a prepared answer, before everything else
        self.requests: list[Request] = []
        self.released = threading.Event()  # ends every hang, delay and long poll at close()
        self._serial = 0
        self._changed = threading.Condition()
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                owner.requests.append(Request(self.path, dict(self.headers.items())))
                owner._answer(self)
                if owner.released.is_set():  # a closed service refuses: no keep-alive connection outlives it
                    self.close_connection = True

        self.server = ThreadedServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        serve(self.server)

    # --- what it answers ---

    @property
    def version(self) -> str:
        return f"{self._serial}-{hashlib.sha1(str(self._serial).encode()).hexdigest()[:10]}"

    def set(self, containers: list[dict[str, Any]] | None = None, metadata: Any = ..., bump: bool = True) -> None:
        """New containers and/or service metadata (dropping prepared answers for them); `bump`
        changes the version, which ends waiting long polls."""
        with self._changed:
            if containers is not None:
                self.containers = list(containers)
                self.answers.pop(f"/{self.api_version}/containers", None)
            if metadata is not ...:
                self.service_metadata = metadata
                self.answers.pop(f"/{self.api_version}/self/service/metadata", None)
            if bump:
                self._serial += 1
                self._changed.notify_all()

    def add(self, *containers: dict[str, Any]) -> None:
        self.set(self.containers + list(containers))

    def answer(self, path: str, **answer: Any) -> None:
        self.answers[path] = Answer(**answer)

    def answer_json(self, path: str, data: Any, status: int = 200, **answer: Any) -> None:
        self.answer(path, status=status, body=json.dumps(data).encode(), **answer)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def close(self) -> None:
        with self._changed:
            self.released.set()
            self._changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- answering ---

    def _answer(self, handler: QuietHandler) -> None:
        if handler.path in self.answers:
            self._prepared(handler, self.answers[handler.path])
            return
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
            handler.send_json(404, NOT_FOUND)

    def _wait_version(self, query: dict[str, str]) -> str:
        if query.get("wait") != "true":
            return self.version
        hold = min(float(query.get("maxWait", "60")), 120.0, self.max_hold)
        deadline = time.monotonic() + hold
        with self._changed:
            while self.version == query.get("value") and not self.released.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.5))
            return self.version

    def _prepared(self, handler: QuietHandler, answer: Answer) -> None:
        if answer.hang:
            self.released.wait(30)
            handler.close_connection = True
            return
        if answer.delay and self.released.wait(answer.delay):
            return
        body = answer.body
        if answer.rotate:
            body = answer.rotate[0]
            answer.rotate.append(answer.rotate.pop(0))
        if not (answer.chunked or answer.cut is not None or answer.drip):
            handler.send_body(answer.status, body, answer.content_type, answer.headers)
            return
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        if answer.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for i in range(0, len(body), 50):
                piece = body[i : i + 50]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")
            return
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if answer.cut is not None:
            handler.wfile.write(body[: answer.cut])
            handler.close_connection = True
            return
        for i in range(len(body)):
            handler.wfile.write(body[i : i + 1])
            handler.wfile.flush()
            if self.released.wait(answer.drip):
                return
