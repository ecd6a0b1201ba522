"""ACME's files and bookkeeping: where certificates, the challenge map and state.json live,
the per-host backoff, and which routed hosts are due an order (pure). The protocol is in acme.py.

ACME_DIR/
  account.key     the account's private key (0600)
  certs/<host>.pem   chain + key of each issued certificate (0600), read by tls.from_acme
  challenges.map  the pending challenges haproxy answers
  state.json      per host: failures, next try, last error
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import files
from .names import covers
from .errors import RhgenError

if TYPE_CHECKING:
    from .certs import Certificate

log = logging.getLogger("rhgen.acme")

BACKOFF_FIRST = 300.0  # seconds after the first failure; doubles with each further one
BACKOFF_MAX = 86400.0


@dataclass(frozen=True)
class HostState:
    failures: int = 0
    next_try: float = 0.0  # unix time (wall clock) before which no new order is placed
    error: str = ""



# --- files -----------------------------------------------------------------------------------


def cert_folder(settings: Any) -> str:
    return os.path.join(settings.acme_dir, "certs")


def challenge_map(settings: Any) -> str:
    return os.path.join(settings.acme_dir, "challenges.map")


def state_path(settings: Any) -> str:
    return os.path.join(settings.acme_dir, "state.json")


def cert_path(settings: Any, host: str) -> str:
    return os.path.join(cert_folder(settings), f"{host}.pem")


def prepare(settings: Any) -> None:
    """ACME_DIR and an empty challenge map must exist before haproxy -c reads the config."""
    try:
        os.makedirs(cert_folder(settings), mode=0o700, exist_ok=True)
        if not os.path.exists(challenge_map(settings)):
            files.write_atomically(challenge_map(settings), b"", 0o644)
    except OSError as exc:
        raise RhgenError(f"ACME_DIR {settings.acme_dir}: cannot prepare ({exc.strerror})") from None


def write_secret(path: str, content: bytes) -> None:
    """Atomically, mode 0600 whatever the file had before: it holds a private key."""
    files.write_atomically(path, content, 0o600, secret=True)


def read_state(settings: Any) -> dict[str, HostState]:
    try:
        with open(state_path(settings), encoding="utf-8") as handle:
            data = json.load(handle)
        return {
            str(host): HostState(int(item.get("failures", 0)), float(item.get("next_try", 0)), str(item.get("error", "")))
            for host, item in data.get("hosts", {}).items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        log.warning("ACME state %s: unreadable (%s); starting afresh", state_path(settings), exc)
        return {}


def write_state(settings: Any, state: dict[str, HostState]) -> None:
    data = {
        "hosts": {
            host: {
                "failures": item.failures,
                "next_try": item.next_try,
                "next_try_utc": datetime.datetime.fromtimestamp(item.next_try, datetime.timezone.utc).isoformat(),
                "error": item.error,
            }
            for host, item in sorted(state.items())
        }
    }
    files.write_atomically(state_path(settings), (json.dumps(data, indent=2) + "\n").encode(), 0o600)


def backoff(failures: int) -> float:
    return min(BACKOFF_FIRST * 2 ** max(0, failures - 1), BACKOFF_MAX)


# --- what needs an order: pure ------------------------------------------------------------------


def in_scope(patterns: Sequence[str], host: str) -> bool:
    return not patterns or covers(patterns, host)


def due_hosts(
    settings: Any, hosts: Iterable[str], certificates: Sequence[Certificate], state: dict[str, HostState], now: float
) -> list[tuple[str, str]]:
    """(host, why) for each routed host in ACME_HOSTS that no user certificate covers and whose ACME
    certificate is missing or within ACME_RENEW_DAYS of expiry, and whose backoff is over."""
    users = [name for cert in certificates if not cert.acme for name in cert.names]
    issued = {cert.path: cert for cert in certificates if cert.acme}
    renew_before = now + settings.acme_renew_days * 86400
    due = []
    for host in sorted(set(hosts)):
        if not in_scope(settings.acme_hosts, host) or covers(users, host):
            continue
        cert = issued.get(cert_path(settings, host))
        if cert is not None and cert.not_after.timestamp() > renew_before:
            continue
        why = "renewal" if cert is not None else "new certificate"
        waiting = state.get(host)
        if waiting and waiting.next_try > now:
            log.info("ACME %s: retry after %s UTC (%s)", host, utc(waiting.next_try), waiting.error)
            continue
        due.append((host, why))
    return due


def utc(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc):%Y-%m-%d %H:%M:%S}"


def status(settings: Any, host: str, cert: Certificate | None, state: dict[str, HostState]) -> str:
    """One host's ACME state for `rhgen certs`: outside ACME, valid until, pending, next retry."""
    if not settings.acme_directory or not in_scope(settings.acme_hosts, host):
        return "not managed by ACME"
    if cert is not None and not cert.acme:
        return "your certificate covers it; no ACME order"
    waiting = state.get(host)
    if waiting:
        return f"next retry {utc(waiting.next_try)} UTC after {waiting.failures} failures ({waiting.error})"
    if cert is None:
        return "pending: ordered at the next run"
    renew = cert.not_after.timestamp() - settings.acme_renew_days * 86400
    return f"valid until {utc(cert.not_after.timestamp())} UTC, renewed from {utc(renew)} UTC"
