"""The docker source's GET /containers/json, on the standard library's http.client: importing
requests and urllib3 would cost every run ~70 ms, a third of a no-change run of the file source
(docs/benchmarks.md). Bounded and retried as http.py's client is, in the same words: connect and
read timeouts (RHGEN_CONNECT_TIMEOUT; RHGEN_READ_TIMEOUT for the whole answer), at most
RHGEN_MAX_ANSWER_BYTES, RHGEN_RETRIES more tries on refusal, timeout and 5xx; a failure is one
SourceError line. The watch's long-lived event stream stays on requests (engine.py).
"""

from __future__ import annotations

import grp
import http.client
import logging
import os
import socket
import time
import urllib.parse
from typing import Any

from ..errors import SourceError

log = logging.getLogger(__name__)


class _Transient(Exception):
    """A failure worth another try."""


class _Connection(http.client.HTTPConnection):
    """To DOCKER_HOST, unix:///path or tcp://host:port; the connect bounded by its own timeout."""

    def __init__(self, docker_host: str, connect_timeout: float, read_timeout: float):
        self.unix_path = docker_host[len("unix://"):] if docker_host.startswith("unix://") else ""
        super().__init__("localhost" if self.unix_path else docker_host[len("tcp://"):], timeout=read_timeout)
        self.connect_timeout = connect_timeout

    def connect(self) -> None:
        if self.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(self.unix_path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), self.connect_timeout)
        sock.settimeout(self.timeout)
        self.sock = sock


def get_body(settings: Any, path: str, what: str, **params: str) -> bytearray:
    """The bytes of one answer from the Engine API, retried on refusal, timeout and 5xx."""
    url = path + ("?" + urllib.parse.urlencode(params) if params else "")
    attempts = settings.metadata_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _get_once(settings, url, what)
        except _Transient as exc:
            if attempt == attempts:
                tries = f" after {attempts} tries" if attempts > 1 else ""
                raise SourceError(f"{what}: {exc}{tries}") from None
            log.info("%s: %s; retrying", what, exc)
            time.sleep(min(0.25 * 2 ** (attempt - 1), 2.0))
    raise AssertionError("unreachable")


def _get_once(settings: Any, url: str, what: str) -> bytearray:
    deadline = time.monotonic() + settings.metadata_read_timeout
    try:  # a port that is not a number (tcp://host:x) is an InvalidURL here: an HTTPException
        connection = _Connection(settings.docker_host, settings.metadata_connect_timeout, settings.metadata_read_timeout)
    except http.client.HTTPException as exc:
        raise SourceError(f"{what}: {exc.__class__.__name__} ({exc})") from None
    try:
        connection.request("GET", url, headers={"Accept": "application/json"})
        answer = connection.getresponse()
        if answer.status >= 500:
            raise _Transient(f"HTTP {answer.status}")
        if answer.status != 200:
            raise SourceError(f"{what}: HTTP {answer.status}")
        return _read_body(answer, what, deadline, settings.metadata_max_bytes)
    except TimeoutError:
        raise _Transient("timed out") from None
    except (http.client.IncompleteRead, ConnectionResetError, BrokenPipeError):  # RemoteDisconnected too
        raise _Transient("answer cut short") from None
    except http.client.HTTPException as exc:
        raise SourceError(f"{what}: {exc.__class__.__name__}") from None
    except OSError as exc:
        raise _Transient(_reason(exc)) from None
    finally:
        connection.close()


def _read_body(answer: http.client.HTTPResponse, what: str, deadline: float, cap: int) -> bytearray:
    """The whole body, at most `cap` bytes, read as it arrives so the deadline is checked after
    every read (a daemon that trickles a byte now and then cannot hold the run)."""
    declared = answer.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise SourceError(f"{what}: answer of {int(declared)} bytes is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
    body = bytearray()
    while chunk := answer.read1(min(cap + 1, 256 * 1024)):
        if len(body) + len(chunk) > cap:
            raise SourceError(f"{what}: answer is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
        if time.monotonic() > deadline:
            raise _Transient("answer took longer than the read timeout")
        body += chunk
    if answer.length:  # bytes announced by Content-Length that never came: read1() gives b"" at the close
        raise _Transient("answer cut short")
    return body


def _reason(exc: OSError) -> str:
    """The words of http.py's connection_reason for the same failures."""
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    for kind, reason in ((ConnectionRefusedError, "connection refused"), (FileNotFoundError, "socket not found"),
                         (PermissionError, "permission denied")):
        if isinstance(exc, kind):
            return reason
    return "connection failed"


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
