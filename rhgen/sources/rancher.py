"""Rancher 1.x metadata source: GET /<version>/containers and /<version>/self/service/metadata."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import requests
import urllib3

from ..errors import SourceError
from ..model import SourceData
from . import source_data

log = logging.getLogger(__name__)

_MISSING = object()


def base_url(host: str, version: str) -> str:
    """`host`, `host:port` or `http(s)://host:port[/path]` -> the versioned API root."""
    root = host if host.startswith(("http://", "https://")) else f"http://{host}"
    return f"{root.rstrip('/')}/{version}"


def fetch(settings: Any) -> SourceData:
    root = base_url(settings.rancher_api_host, settings.rancher_api_version)
    with requests.Session() as session:
        session.headers["Accept"] = "application/json"
        session.trust_env = False  # the metadata service is local: never through an HTTP proxy
        containers = get_json(session, f"{root}/containers", settings)
        metadata = get_json(session, f"{root}/self/service/metadata", settings, missing=None)
    return source_data(containers, metadata, f"metadata {root}")


def get_json(session: requests.Session, url: str, settings: Any, missing: Any = _MISSING) -> Any:
    """One JSON answer, retried on refusal, timeout and 5xx; 404 gives `missing` when allowed."""
    attempts = settings.metadata_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            return _get_once(session, url, settings, missing)
        except _Transient as exc:
            if attempt == attempts:
                tries = f" after {attempts} tries" if attempts > 1 else ""
                raise SourceError(f"metadata {url}: {exc}{tries}") from None
            log.info("metadata %s: %s; retrying", url, exc)
            time.sleep(min(0.25 * 2 ** (attempt - 1), 2.0))
    raise AssertionError("unreachable")


class _Transient(Exception):
    """A failure worth another try."""


def _get_once(session: requests.Session, url: str, settings: Any, missing: Any) -> Any:
    deadline = time.monotonic() + settings.metadata_read_timeout
    try:
        with session.get(
            url,
            timeout=(settings.metadata_connect_timeout, settings.metadata_read_timeout),
            stream=True,
            allow_redirects=False,
        ) as answer:
            if answer.status_code == 404 and missing is not _MISSING:
                return missing
            if answer.status_code >= 500:
                raise _Transient(f"HTTP {answer.status_code}")
            if answer.status_code != 200:
                raise SourceError(f"metadata {url}: HTTP {answer.status_code}")
            body = _read_body(answer, url, deadline, settings.metadata_max_bytes)
    except requests.Timeout:
        raise _Transient("timed out") from None
    except requests.exceptions.ChunkedEncodingError:
        raise _Transient("answer cut short") from None
    except requests.ConnectionError as exc:
        raise _Transient(_connection_reason(exc)) from None
    except requests.RequestException as exc:
        raise SourceError(f"metadata {url}: {exc.__class__.__name__}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise SourceError(f"metadata {url}: answer is not JSON ({_preview(body)})") from None
    except RecursionError:  # json raises it, not ValueError, for arrays nested a few thousand deep
        raise SourceError(f"metadata {url}: answer is not JSON of a usable shape (nested too deeply)") from None


def _read_body(answer: requests.Response, url: str, deadline: float, cap: int) -> bytes:
    """The whole body, at most `cap` bytes (RHGEN_MAX_ANSWER_BYTES): a runaway answer is an error, not a swap file."""
    declared = answer.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > cap:
        raise SourceError(f"metadata {url}: answer of {int(declared)} bytes is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
    chunks, size = [], 0
    for chunk in _pieces(answer, min(cap + 1, 256 * 1024)):
        size += len(chunk)
        if size > cap:
            raise SourceError(f"metadata {url}: answer is over the {cap}-byte cap (RHGEN_MAX_ANSWER_BYTES)")
        if time.monotonic() > deadline:
            raise _Transient("answer took longer than the read timeout")
        chunks.append(chunk)
    return b"".join(chunks)


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


def _connection_reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for needle, reason in (
        ("Name or service not known", "host name not found"),
        ("Temporary failure in name resolution", "host name not found"),
        ("nodename nor servname", "host name not found"),
        ("Connection refused", "connection refused"),
        ("Read timed out", "timed out"),
        ("IncompleteRead", "answer cut short"),
        ("Connection broken", "answer cut short"),
    ):
        if needle in text:
            return reason
    return "connection failed"


def _preview(body: bytes) -> str:
    text = body[:60].decode("utf-8", "replace").replace("\n", " ").strip()
    return f"starts with {text!r}" if text else "empty"
