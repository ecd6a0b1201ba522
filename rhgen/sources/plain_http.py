"""One GET of a whole answer, on the standard library's http.client: what a one-shot run of the
Rancher source asks for. Importing requests and urllib3 would cost every run ~70 ms and ~6 MB,
a fifth of a run that changes nothing; the watch's long poll stays on requests (http.py).

Bounded and retried as http.py's client is, in the same words: connect and read timeouts
(RHGEN_CONNECT_TIMEOUT; RHGEN_READ_TIMEOUT for the whole answer), at most RHGEN_MAX_ANSWER_BYTES
(after gzip or deflate decoding), RHGEN_RETRIES more tries on refusal, timeout and 5xx; no
redirect followed, no proxy; a failure is one SourceError line.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
import urllib.parse
import zlib
from collections.abc import Callable
from typing import Any

from ..errors import SourceError
from .answers import preview

log = logging.getLogger(__name__)

MISSING = object()  # get_body(missing=...) not given: a 404 is an error
READ_BYTES = 256 * 1024


class _Transient(Exception):
    """A failure worth another try."""


def get_body(settings: Any, url: str, what: str = "", missing: Any = MISSING, unix_socket: str = "") -> Any:
    """The bytes of the answer to GET `url` (http or https), retried on refusal, timeout and 5xx;
    a 404 gives `missing` when that is given. `what` names the resource in messages. With
    `unix_socket` the request goes to that socket (the Docker Engine API), `url` giving the path."""
    what = what or f"metadata {url}"
    attempts = settings.metadata_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _get_once(settings, url, what, missing, unix_socket)
        except _Transient as exc:
            if attempt == attempts:
                tries = f" after {attempts} tries" if attempts > 1 else ""
                raise SourceError(f"{what}: {exc}{tries}") from None
            log.info("%s: %s; retrying", what, exc)
            time.sleep(min(0.25 * 2 ** (attempt - 1), 2.0))
    raise AssertionError("unreachable")


def parse_json(body: bytes, what: str, loads: Callable[[bytes], Any] = json.loads) -> Any:
    """The JSON of an answer (decoded by `loads`), or a SourceError saying why not."""
    try:
        return loads(body)
    except ValueError:
        raise SourceError(f"{what}: answer is not JSON ({preview(body)})") from None
    except RecursionError:  # json raises it, not ValueError, for arrays nested a few thousand deep
        raise SourceError(f"{what}: answer is not JSON of a usable shape (nested too deeply)") from None


class UnixConnection(http.client.HTTPConnection):
    """http.client to a unix socket (the Docker Engine API); also the bench's own Engine API client."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _connection(url: str, settings: Any, what: str, unix_socket: str) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if unix_socket:
        return UnixConnection(unix_socket, settings.metadata_connect_timeout), target
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        port = parts.port
    except ValueError:
        raise SourceError(f"{what}: the port is not a number") from None
    return kind(parts.hostname or "", port, timeout=settings.metadata_connect_timeout), target


def _get_once(settings: Any, url: str, what: str, missing: Any, unix_socket: str) -> Any:
    deadline = time.monotonic() + settings.metadata_read_timeout
    connection, target = _connection(url, settings, what, unix_socket)
    try:
        connection.connect()  # bounded by the connect timeout; every read after by the read timeout
        if connection.sock is not None:
            connection.sock.settimeout(settings.metadata_read_timeout)
        connection.request("GET", target, headers={"Accept": "application/json", "Accept-Encoding": "gzip, deflate"})
        answer = connection.getresponse()
        if answer.status == 404 and missing is not MISSING:
            return missing
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
    """The whole (decoded) body, at most `cap` bytes, read as it arrives so that the deadline is
    checked after every read: a server that trickles a byte now and then cannot hold the run."""
    over = f"{what}: answer is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)"
    declared = answer.getheader("Content-Length", "")
    encoding = answer.getheader("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip", "deflate"):
        raise SourceError(f"{what}: answer in the unknown encoding {encoding[:40]!r}")
    if encoding == "identity" and declared.isdigit() and int(declared) > cap:
        raise SourceError(f"{what}: answer of {int(declared)} bytes is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
    # wbits 47: a gzip or a zlib header, detected; a decoded size past the cap stops a gzip bomb early.
    decoder = zlib.decompressobj(47) if encoding != "identity" else None
    body = bytearray()
    while chunk := answer.read1(READ_BYTES):
        if decoder is not None:
            try:
                chunk = decoder.decompress(chunk, cap + 1 - len(body))
            except zlib.error:
                raise SourceError(f"{what}: answer is not valid {encoding}") from None
        if len(body) + len(chunk) > cap:
            raise SourceError(over)
        if time.monotonic() > deadline:
            raise _Transient("answer took longer than the read timeout")
        body += chunk
    if decoder is not None and (tail := decoder.flush()):
        if len(body) + len(tail) > cap:
            raise SourceError(over)
        body += tail
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
