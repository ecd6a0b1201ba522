"""ACME stage: certificates for routed hosts, issued and renewed over HTTP-01, after routing is applied.

haproxy answers the challenges itself: the HTTP frontend returns the value of
ACME_DIR/challenges.map (`/.well-known/acme-challenge/<token>` -> key authorization) and rhgen
updates that map through the runtime API while an order is pending (and writes the file, so a
reload in between keeps answering). The protocol is certbot's `acme` library, never by hand.

Nothing here may break routing: every failure is a warning, recorded per host in
ACME_DIR/state.json with an exponential backoff in wall-clock time (a restart keeps it), and the
whole stage stops after ACME_TIMEOUT seconds and ACME_MAX_ORDERS orders.

The files and the bookkeeping (state, backoff, what is due) are in acme_state.py.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import __version__, files, lock, reloads, runtime
from .acme_state import (
    HostState,
    backoff,
    cert_path,
    challenge_map,
    due_hosts,
    read_state,
    state_path,
    utc,
    write_secret,
    write_state,
)
from .errors import AcmeError, ApplyError, RhgenError, RuntimeApiError

if TYPE_CHECKING:
    from .tls import Tls
    from .model import Routing

log = logging.getLogger(__name__)

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
NETWORK_TIMEOUT = 10  # one HTTP request to the ACME server
_TOKEN = re.compile(r"[A-Za-z0-9_-]+\Z")



@dataclass(frozen=True)
class Result:
    issued: tuple[str, ...] = ()  # hosts whose certificate file is new: the crt-list changes
    renewed: tuple[str, ...] = ()  # hosts whose served certificate was replaced through the runtime API
    reload_needed: bool = False  # a renewal could not go through the runtime API
    failed: tuple[str, ...] = ()



# --- the run -----------------------------------------------------------------------------------


def run(settings: Any, routing: Routing, tls: Tls | None, live_crt_list: bytes | None) -> Result:
    """Place the orders this run may place; never raises for an ACME failure (a warning instead).
    One run at a time per ACME_DIR (the schedule and `rhgen watch` may overlap): a second waits
    at most ACME_TIMEOUT, then leaves the orders to the next run."""
    try:
        with lock.exclusive_lock(state_path(settings), timeout=settings.acme_timeout):
            return _run(settings, routing, tls, live_crt_list)
    except ApplyError as exc:
        log.warning("ACME: %s; orders wait for the next run", exc)
        return Result()


def _run(settings: Any, routing: Routing, tls: Tls | None, live_crt_list: bytes | None) -> Result:
    now = time.time()
    state = read_state(settings)
    certificates = tls.certificates if tls else ()
    hosts = (route.host for route in routing.routes if not route.host.startswith("*."))  # HTTP-01 cannot do wildcards
    due = due_hosts(settings, hosts, certificates, state, now)
    if not due:
        return Result()
    if settings.haproxy_stats_socket:
        try:  # haproxy must answer the challenges: before it runs (the first run at start), wait
            runtime.send(settings.haproxy_stats_socket, "show info")
        except RuntimeApiError as exc:
            log.info("ACME waits for the next run: %s", exc)
            return Result()
    if len(due) > settings.acme_max_orders:
        waiting = ", ".join(host for host, _ in due[settings.acme_max_orders:])
        log.warning("ACME: %d hosts due, ACME_MAX_ORDERS is %d; next run: %s", len(due), settings.acme_max_orders, waiting)
        due = due[: settings.acme_max_orders]
    deadline = time.monotonic() + settings.acme_timeout
    issued, renewed, failed = [], [], []
    reload_needed = False
    client = None
    for host, why in due:
        try:
            if time.monotonic() >= deadline:
                raise AcmeError(f"ACME_TIMEOUT ({settings.acme_timeout:g} s) reached before the order")
            if client is None:
                client = _client(settings, deadline)
            pem = _order(settings, client, host, deadline)
            path = cert_path(settings, host)
            served = live_crt_list is not None and path.encode() in live_crt_list.splitlines()
            write_secret(path, pem)
        except (RhgenError, OSError) as exc:  # an ACME failure never stops the run
            failures = state.get(host, HostState()).failures + 1
            retry = time.time() + backoff(failures)
            state[host] = HostState(failures, retry, _one_line(exc))
            failed.append(host)
            log.warning("ACME %s (%s): %s; routing unaffected, retry after %s UTC", host, why, _one_line(exc), utc(retry))
            continue
        state.pop(host, None)
        log.info("ACME %s: %s issued, valid until %s UTC", host, why, _not_after(pem))
        if served:
            if _install_live(settings, path, pem):
                renewed.append(host)
            else:
                reload_needed = True
        else:
            issued.append(host)
    try:
        write_state(settings, state)
    except OSError as exc:
        log.warning("ACME state %s: cannot write (%s)", state_path(settings), exc.strerror)
    return Result(tuple(issued), tuple(renewed), reload_needed, tuple(failed))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _not_after(pem: bytes) -> str:
    from cryptography import x509

    return f"{x509.load_pem_x509_certificate(pem).not_valid_after_utc:%Y-%m-%d %H:%M}"


# --- the protocol, through the acme library ------------------------------------------------------


def _account_key(settings: Any) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = os.path.join(settings.acme_dir, "account.key")
    try:
        with open(path, "rb") as handle:
            return serialization.load_pem_private_key(handle.read(), password=None)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError) as exc:
        raise AcmeError(f"account key {path}: unusable ({exc})") from None
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_secret(path, pem)
    log.info("ACME: created the account key %s", path)
    return key


def _client(settings: Any, deadline: float) -> Any:
    """A registered acme ClientV2 (an existing account is found again by its key)."""
    import josepy
    from acme import client, errors, messages

    key = josepy.JWKEC(key=_account_key(settings))
    verify: Any = settings.acme_ca_bundle or True
    timeout = max(1, min(NETWORK_TIMEOUT, int(deadline - time.monotonic())))
    net = client.ClientNetwork(key, alg=josepy.ES256, verify_ssl=verify, user_agent=f"rhgen/{__version__}", timeout=timeout)
    try:
        directory = client.ClientV2.get_directory(settings.acme_directory, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=settings.acme_email or None, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as exc:
            acme.query_registration(messages.RegistrationResource(uri=exc.location, body=messages.Registration()))
    except _library_errors() as exc:
        raise AcmeError(f"ACME directory {settings.acme_directory}: {_describe(exc)}") from None
    return acme


def _library_errors() -> tuple[type[Exception], ...]:
    """What the acme library lets through: its own errors (server problems included), josepy's,
    requests' (OSError subclasses) and ValueError for answers it cannot decode."""
    import josepy
    from acme import errors

    return (errors.Error, josepy.errors.Error, OSError, ValueError)


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    text = _one_line(exc)
    return f"{name}: {text}" if text != name else name


def _order(settings: Any, acme: Any, host: str, deadline: float) -> bytes:
    """One order for one host: answer HTTP-01 through haproxy, finalize, validate; chain + key PEM."""
    from acme import challenges, crypto_util, errors
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from . import certs, names

    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    published: list[str] = []
    try:
        order = acme.new_order(crypto_util.make_csr(key_pem, [host]))
        for authz in order.authorizations:
            if authz.body.status.name == "valid":
                continue
            body = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if body is None:
                raise AcmeError("the server offers no http-01 challenge")
            response, validation = body.response_and_validation(acme.net.key)
            token = body.chall.encode("token")
            if not _TOKEN.match(token) or not _TOKEN.match(validation.replace(".", "")):
                raise AcmeError("the server sent a challenge token haproxy's map cannot hold")
            key_name = CHALLENGE_PREFIX + token
            _publish(settings, key_name, validation)
            published.append(key_name)
            acme.answer_challenge(body, response)
        remaining = datetime.timedelta(seconds=max(1.0, deadline - time.monotonic()))
        order = acme.poll_and_finalize(order, deadline=datetime.datetime.now() + remaining)
    except errors.ValidationError as exc:
        problems = [
            f"{authz.body.identifier.value}: {c.error.detail if c.error else c.status}"
            for authz in exc.failed_authzrs for c in authz.body.challenges if c.error
        ]
        raise AcmeError(f"validation failed ({'; '.join(problems) or 'no detail'})") from None
    except errors.TimeoutError:
        raise AcmeError(f"not finished within ACME_TIMEOUT ({settings.acme_timeout:g} s)") from None
    except _library_errors() as exc:
        raise AcmeError(_describe(exc)) from None
    finally:
        for key_name in published:
            _withdraw(settings, key_name)
    chain = order.fullchain_pem.encode("ascii")
    now = datetime.datetime.now(datetime.timezone.utc)
    bundle = certs.load_bundle(chain, key_pem, f"ACME certificate for {host}", cert_path(settings, host), True, now, 0)
    if not names.covers(bundle.names, host):
        raise AcmeError(f"the issued certificate names {', '.join(bundle.names)}, not {host}")
    return bundle.pem


# --- challenges and renewals through haproxy ------------------------------------------------------


def _map_file_entries(settings: Any) -> dict[str, str]:
    try:
        with open(challenge_map(settings), "rb") as handle:
            return dict(runtime.map_entries(handle.read()))
    except FileNotFoundError:
        return {}


def _write_map(settings: Any, entries: dict[str, str]) -> None:
    text = "".join(f"{key} {value}\n" for key, value in sorted(entries.items()))
    files.write_atomically(challenge_map(settings), text.encode("ascii"), 0o644)


def _publish(settings: Any, key_name: str, validation: str) -> None:
    """The file first (a reload keeps answering), then the running haproxy, without a reload."""
    entries = _map_file_entries(settings)
    entries[key_name] = validation
    _write_map(settings, entries)
    socket_path = settings.haproxy_stats_socket
    if socket_path:
        path = challenge_map(settings)
        runtime.send(socket_path, f"del map {path} {key_name}")
        answer = runtime.send(socket_path, f"add map {path} {key_name} {validation}")
        if answer.strip():
            raise AcmeError(f"runtime API `add map {path}`: {answer.strip().splitlines()[0]}")
    elif settings.reload_command:  # without the runtime API only a reload makes haproxy read the map
        reloads.reload(settings.reload_command, settings.haproxy_backend_config)
    else:
        raise AcmeError("haproxy cannot learn the challenge: set HAPROXY_STATS_SOCKET (or RELOAD_COMMAND)")


def _withdraw(settings: Any, key_name: str) -> None:
    try:
        entries = _map_file_entries(settings)
        entries.pop(key_name, None)
        _write_map(settings, entries)
        if settings.haproxy_stats_socket:
            runtime.send(settings.haproxy_stats_socket, f"del map {challenge_map(settings)} {key_name}")
    except (OSError, RhgenError) as exc:  # a stale token only answers a challenge nobody asks any more
        log.info("ACME: could not withdraw a challenge (%s)", exc)


def _install_live(settings: Any, path: str, pem: bytes) -> bool:
    """Replace a certificate haproxy already serves, in memory: `set ssl cert` + `commit ssl cert`."""
    socket_path = settings.haproxy_stats_socket
    if not socket_path:
        return False
    try:
        answer = runtime.send(socket_path, f"set ssl cert {path} <<\n{pem.decode('ascii')}\n")
        if "Transaction" not in answer:
            raise RuntimeApiError(f"runtime API `set ssl cert {path}`: {answer.strip() or 'no answer'}")
        answer = runtime.send(socket_path, f"commit ssl cert {path}")
        if "Success" not in answer:
            runtime.send(socket_path, f"abort ssl cert {path}")
            raise RuntimeApiError(f"runtime API `commit ssl cert {path}`: {answer.strip().splitlines()[-1:] or 'no answer'}")
    except RuntimeApiError as exc:
        log.warning("%s; reloading instead", exc)
        return False
    log.info("ACME: %s renewed through the runtime API, no reload", path)
    return True
