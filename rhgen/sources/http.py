"""The one JSON-over-HTTP client of the sources (rancher, docker, swarm): bounded in time and
size, retried on refusal, timeout and 5xx, failures as one-line SourceErrors."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import requests
import urllib3

from ..errors import SourceError
from .plain_http import parse_json

log = logging.getLogger(__name__)

_MISSING = object()


def get_json(
    session: requests.Session, url: str, settings: Any, missing: Any = _MISSING, what: str = "", **params: str
) -> Any:
    """One JSON answer, retried on refusal, timeout and 5xx; 404 gives `missing` when allowed.
    `what` names the resource in messages (default "metadata <url>")."""
    what = what or f"metadata {url}"
    body = get_body(session, url, settings, _GONE if missing is not _MISSING else _MISSING, what, **params)
    return missing if body is _GONE else parse_json(body, what)


_GONE = object()  # get_json's 404 marker


def get_body(
    session: requests.Session, url: str, settings: Any, missing: Any = _MISSING, what: str = "", **params: str
) -> Any:
    """The bytes of one answer, retried as get_json's; 404 gives `missing` when allowed."""
    what = what or f"metadata {url}"
    attempts = settings.metadata_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _get_once(session, url, settings, missing, what, params)
        except _Transient as exc:
            if attempt == attempts:
                tries = f" after {attempts} tries" if attempts > 1 else ""
                raise SourceError(f"{what}: {exc}{tries}") from None
            log.info("%s: %s; retrying", what, exc)
            time.sleep(min(0.25 * 2 ** (attempt - 1), 2.0))
    raise AssertionError("unreachable")


class _Transient(Exception):
    """A failure worth another try."""


def _get_once(
    session: requests.Session, url: str, settings: Any, missing: Any, what: str, params: dict[str, str]
) -> Any:
    deadline = time.monotonic() + settings.metadata_read_timeout
    try:
        with session.get(
            url,
            params=params,
            timeout=(settings.metadata_connect_timeout, settings.metadata_read_timeout),
            stream=True,
            allow_redirects=False,
        ) as answer:
            if answer.status_code == 404 and missing is not _MISSING:
                return missing
            if answer.status_code >= 500:
                raise _Transient(f"HTTP {answer.status_code}")
            if answer.status_code != 200:
                raise SourceError(f"{what}: HTTP {answer.status_code}")
            body = _read_body(answer, what, deadline, settings.metadata_max_bytes)
    except requests.Timeout:
        raise _Transient("timed out") from None
    except requests.exceptions.ChunkedEncodingError:
        raise _Transient("answer cut short") from None
    except requests.ConnectionError as exc:
        raise _Transient(connection_reason(exc)) from None
    except requests.RequestException as exc:
        raise SourceError(f"{what}: {exc.__class__.__name__}") from None
    return body


def _read_body(answer: requests.Response, what: str, deadline: float, cap: int) -> bytearray:
    """The whole body, at most `cap` bytes (RHGEN_MAX_ANSWER_BYTES): a runaway answer is an error, not a swap file.
    One growing buffer, not a list of chunks joined at the end: a 6 MB answer is held once, not twice."""
    declared = answer.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise SourceError(f"{what}: answer of {int(declared)} bytes is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
    body = bytearray()
    for chunk in _pieces(answer, min(cap + 1, 256 * 1024)):
        if len(body) + len(chunk) > cap:
            raise SourceError(f"{what}: answer is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
        if time.monotonic() > deadline:
            raise _Transient("answer took longer than the read timeout")
        body += chunk
    return body


def _pieces(answer: requests.Response, size: int) -> Iterator[bytes]:
    """The body as it arrives, so the caller checks its deadline after every network read.

    iter_content() blocks until a whole chunk is in, however slowly it trickles, which
    would let a server that sends a byte now and then hold a run far past the read timeout.
    """
    raw = answer.raw
    if not hasattr(raw, "read1"):  # older urllib3 without read1(): whole chunks only
        yield from answer.iter_content(chunk_size=size)
        return
    try:
        while chunk := raw.read1(size, decode_content=True):
            yield chunk
    except urllib3.exceptions.ReadTimeoutError as exc:  # the same exceptions iter_content raises
        raise requests.ConnectionError(exc) from None
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except urllib3.exceptions.DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None


def connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for needle, reason in (
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Connection refused", "connection refused"),
        ("No such file or directory", "socket not found"),
        ("Permission denied", "permission denied"),
        ("Read timed out", "timed out"),
        ("IncompleteRead", "answer cut short"),
        ("Connection broken", "answer cut short"),
    ):
        if needle in text:
            return reason
    return "connection failed"
