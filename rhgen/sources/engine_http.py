"""The Engine API calls of a run (the docker source's GET /containers/json, the swarm source's
/info, /networks, /services, /tasks), through plain_http.py's client: the standard library's
http.client, with the bounds, retries and words of every source; importing requests and urllib3
would cost every run ~70 ms. The watches' long-lived event streams stay on requests (engine.py).
DOCKER_HOST is unix:///path or tcp://host:port.
"""

from __future__ import annotations

import grp
import os
import urllib.parse
from typing import Any

from ..errors import SourceError
from . import plain_http


def get_body(settings: Any, path: str, what: str, **params: str) -> bytearray:
    """The bytes of one answer from the Engine API, retried on refusal, timeout and 5xx."""
    query = "?" + urllib.parse.urlencode(params) if params else ""
    host = settings.docker_host
    if host.startswith("unix://"):
        return plain_http.get_body(settings, f"http://localhost{path}{query}", what, unix_socket=host[len("unix://"):])
    return plain_http.get_body(settings, f"http://{host[len('tcp://'):]}{path}{query}", what)


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
