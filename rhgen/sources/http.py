"""The words for a failed request of the watch's long-lived streams, which are on requests (the
Rancher long poll, Docker's and Swarm's /events). A one-shot run's GETs are on plain_http.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests


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
