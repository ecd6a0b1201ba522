"""The Docker Engine API connection of the docker and swarm watches' /events streams, on requests:
DOCKER_HOST is unix:///path/docker.sock (default) or tcp://host:port. Every one-shot call of a run
goes through engine_http.py instead, on the standard library: `rhgen generate` never imports this."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from . import retry_delay

log = logging.getLogger(__name__)

# An events stream silent this long is reopened (with `since`, so nothing is lost): a dead
# daemon behind tcp:// would otherwise hold the watch forever.
EVENTS_IDLE_SECONDS = 300


# --- HTTP over a unix socket ----------------------------------------------------------------


class _UnixConnection(urllib3.connection.HTTPConnection):
    def __init__(self, socket_path: str, **kwargs: Any):
        super().__init__("localhost", **kwargs)
        self.socket_path = socket_path

    def _new_conn(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, int | float) else None)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            raise urllib3.exceptions.NewConnectionError(self, f"{self.socket_path}: {exc.strerror}") from exc
        return sock


class _UnixPool(urllib3.connectionpool.HTTPConnectionPool):
    def __init__(self, socket_path: str):
        super().__init__("localhost")
        self.socket_path = socket_path

    def _new_conn(self) -> _UnixConnection:
        return _UnixConnection(self.socket_path, timeout=self.timeout.connect_timeout)


class _UnixAdapter(requests.adapters.HTTPAdapter):
    """Every request through this adapter goes to one unix socket, whatever the URL's host."""

    def __init__(self, socket_path: str):
        super().__init__()
        self.pool = _UnixPool(socket_path)

    def get_connection_with_tls_context(self, request: Any, verify: Any, proxies: Any = None, cert: Any = None) -> Any:
        return self.pool

    def get_connection(self, url: Any, proxies: Any = None) -> Any:  # requests < 2.32
        return self.pool

    def close(self) -> None:
        self.pool.close()
        super().close()


@contextmanager
def session(settings: Any) -> Iterator[tuple[requests.Session, str]]:
    """A session and the API root for DOCKER_HOST."""
    with requests.Session() as http:
        http.trust_env = False  # never through an HTTP proxy
        if settings.docker_host.startswith("unix://"):
            http.mount("http://docker/", _UnixAdapter(settings.docker_host[len("unix://"):]))
            yield http, "http://docker"
        else:
            yield http, "http://" + settings.docker_host[len("tcp://"):]


def pause(where: str, reason: str, failures: int, stop: threading.Event) -> None:
    delay = retry_delay(failures)
    log.warning("%s: %s; trying again in %.1f s", where, reason, delay)
    stop.wait(delay)
