"""The Docker Engine API connection shared by the docker and swarm sources: DOCKER_HOST is
unix:///path/docker.sock (default) or tcp://host:port; requests go through the one JSON client."""

from __future__ import annotations

import grp
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
import requests.adapters
import urllib3.connection
import urllib3.connectionpool

from ..errors import SourceError
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


def socket_error(docker_host: str) -> SourceError | None:
    """After a failed call: a one-line error saying what to do when the unix socket is missing or
    not ours to use (the two ways a container is usually set up wrong); None for anything else."""
    if not docker_host.startswith("unix://"):
        return None
    path = docker_host[len("unix://"):]
    if not os.path.exists(path):
        return SourceError(
            f"docker socket {path} not found (DOCKER_HOST={docker_host}): mount it into the container with "
            f"-v /var/run/docker.sock:{path}:ro"
        )
    if not os.access(path, os.R_OK | os.W_OK):
        stat = os.stat(path)
        try:
            group = grp.getgrgid(stat.st_gid).gr_name
        except KeyError:
            group = str(stat.st_gid)
        return SourceError(
            f"docker socket {path}: permission denied (owned by group {group}, gid {stat.st_gid}, mode "
            f"{stat.st_mode & 0o777:o}): run rhgen in that group (docker run --group-add {stat.st_gid}) or as root"
        )
    return None


def pause(where: str, reason: str, failures: int, stop: threading.Event) -> None:
    delay = retry_delay(failures)
    log.warning("%s: %s; trying again in %.1f s", where, reason, delay)
    stop.wait(delay)
