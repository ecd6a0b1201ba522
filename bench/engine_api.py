"""The bench's own client of the Docker Engine API (HTTP over /var/run/docker.sock), so a figure
times the API call itself and not the start of a `docker` CLI process; and a follower of
GET /events that stamps each event as it arrives. For docker_convergence and docker_scale."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from rhgen.sources.plain_http import UnixConnection

SOCKET = "/var/run/docker.sock"


def call(method: str, path: str, query: dict[str, str] | None = None, body: Any = None,
         timeout: float = 120) -> tuple[int, Any]:
    """One API call on a fresh connection: (status, decoded JSON body or None)."""
    connection = UnixConnection(SOCKET, timeout)
    try:
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, url, body=payload, headers={"Content-Type": "application/json"} if payload else {})
        answer = connection.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data.strip() else None
    finally:
        connection.close()


def start(container: str) -> None:
    status, body = call("POST", f"/containers/{container}/start")
    if status not in (204, 304):
        raise AssertionError(f"POST /containers/{container}/start: HTTP {status} {body}")


def stop(container: str, seconds: int = 1) -> None:
    status, body = call("POST", f"/containers/{container}/stop", {"t": str(seconds)})
    if status not in (204, 304):
        raise AssertionError(f"POST /containers/{container}/stop: HTTP {status} {body}")


def create(name: str, image: str, command: list[str], labels: dict[str, str], network: str) -> str:
    status, body = call("POST", "/containers/create", {"name": name},
                        {"Image": image, "Cmd": command, "Hostname": name, "Labels": labels, "HostConfig": {"NetworkMode": network}})
    if status != 201:
        raise AssertionError(f"POST /containers/create {name}: HTTP {status} {body}")
    return body["Id"]


class Events:
    """GET /events on a thread, filtered by label: every event with the monotonic time it arrived."""

    def __init__(self, label: str) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []
        self._connection = UnixConnection(SOCKET, timeout=3600)
        filters = json.dumps({"type": ["container"], "label": [label]})
        self._connection.request("GET", "/events?" + urllib.parse.urlencode({"filters": filters}))
        self._answer = self._connection.getresponse()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            while line := self._answer.readline():
                if line.strip():
                    self.seen.append((time.monotonic(), json.loads(line)))
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed under the reader (http.client raises AttributeError when the socket went)

    def first(self, action: str, name: str, after: float) -> tuple[float, float] | None:
        """(arrived, the daemon's own timeNano in seconds) of the first such event arriving after `after`."""
        for arrived, event in list(self.seen):
            actor = event.get("Actor", {}).get("Attributes", {})
            if arrived >= after and event.get("Action") == action and actor.get("name") == name:
                return arrived, event["timeNano"] / 1e9
        return None

    def count(self, action: str, after: float, where: Callable[[dict[str, Any]], bool] = lambda e: True) -> int:
        return sum(1 for arrived, e in list(self.seen) if arrived >= after and e.get("Action") == action and where(e))

    def close(self) -> None:
        try:
            self._connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        except OSError:
            pass
        self._connection.close()
        self._thread.join(timeout=5)
