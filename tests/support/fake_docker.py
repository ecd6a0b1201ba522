"""The Docker Engine API on a unix socket, as far as rhgen reads it: /containers/json,
/containers/<id>/json, /info and the chunked /events stream, from small dicts (docker_container)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import re
import socketserver
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .metadata import LABEL
from .net import QuietHandler


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

        class Handler(QuietHandler):
            disable_nagle_algorithm = False  # a unix socket has no TCP_NODELAY

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
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

    def _answer(self, handler: QuietHandler) -> None:
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

    def _stream(self, handler: QuietHandler) -> None:
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
