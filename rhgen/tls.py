"""TLS: every certificate haproxy will serve, from three sources, in this order of precedence
for the default certificate:
  1. `ssl_cert` + `ssl_key` in the proxy service's metadata (PEM, or base64 of the PEM),
     written by rhgen to HAPROXY_SSL_CERT;
  2. a combined PEM the user mounted at HAPROXY_SSL_CERT (validated, never written);
  3. a folder of PEM files (HAPROXY_SSL_CERT_DIR), one per domain, chosen by SNI;
then the certificates rhgen's ACME stage issued. A bad certificate from 1 or 2 is an error; a
bad file in a folder is skipped with a warning, since haproxy only loads the files rhgen lists
in the crt-list. Each one is decoded and validated by certs.py.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .certs import KEY_BLOCK, Certificate, decode_metadata_value, load_bundle
from .errors import CertificateError
from .names import covers

log = logging.getLogger("rhgen.certs")

_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_.@+=,-]+\Z")
_SIDE_FILES = (".key", ".ocsp", ".issuer", ".sctl")


@dataclass(frozen=True)
class Tls:
    certificates: tuple[Certificate, ...]  # the first one is the default (no SNI match)


def _read(path: str, source: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(1024 * 1024)
    except OSError as exc:
        raise CertificateError(f"{source}: cannot read ({exc.strerror})") from None


def from_metadata(metadata: Mapping[str, Any], settings: Any, now: datetime.datetime) -> Certificate | None:
    has_cert, has_key = "ssl_cert" in metadata, "ssl_key" in metadata
    if not has_cert and not has_key:
        return None
    if has_cert != has_key:
        missing = "ssl_key" if has_cert else "ssl_cert"
        raise CertificateError(f"metadata has {'ssl_cert' if has_cert else 'ssl_key'} but no {missing}")
    cert = decode_metadata_value(metadata["ssl_cert"], "ssl_cert", settings.ssl_base64_encoded)
    key = decode_metadata_value(metadata["ssl_key"], "ssl_key", settings.ssl_base64_encoded)
    return load_bundle(
        cert, key, "metadata ssl_cert/ssl_key", settings.haproxy_ssl_cert, True, now,
        settings.ssl_expiry_warning_days, parts=("metadata ssl_cert", "metadata ssl_key"),
    )


def from_mounted_file(path: str, settings: Any, now: datetime.datetime) -> Certificate:
    source = f"certificate file {path}"
    data = _read(path, source)
    return load_bundle(data, data, source, path, False, now, settings.ssl_expiry_warning_days)


def from_folder(
    folder: str, default_name: str, settings: Any, now: datetime.datetime, acme: bool = False
) -> list[Certificate]:
    """Every valid PEM in the folder (sorted, the named default first); bad ones are skipped with a warning."""
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        raise CertificateError(f"certificate folder {folder}: cannot read ({exc.strerror})") from None
    if default_name and default_name not in names:
        raise CertificateError(f"certificate folder {folder}: default certificate {default_name!r} is not there")
    found = []
    for name in sorted(names, key=lambda n: (n != default_name, n)):
        path = os.path.join(folder, name)
        if name.startswith(".") or name.endswith(_SIDE_FILES) or not os.path.isfile(path):
            continue
        source = f"certificate file {path}"
        if not _SAFE_FILE_NAME.match(name):
            log.warning("%s: file name has characters haproxy's crt-list cannot hold; skipped", source)
            continue
        try:
            data = _read(path, source)
            key_path = path + ".key"
            key_data = data if KEY_BLOCK.search(data) or not os.path.isfile(key_path) else _read(key_path, source)
            found.append(load_bundle(data, key_data, source, path, False, now, settings.ssl_expiry_warning_days, acme=acme))
        except CertificateError as exc:
            if name == default_name:
                raise
            log.warning("%s; skipped", exc)
    return found


def collect(settings: Any, metadata: Mapping[str, Any], now: datetime.datetime | None = None) -> Tls:
    """All certificates haproxy will serve, the default first; an error when there is none."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    certificates: list[Certificate] = []
    from_meta = from_metadata(metadata, settings, now)
    if from_meta is not None:
        certificates.append(from_meta)
    elif os.path.exists(settings.haproxy_ssl_cert):
        certificates.append(from_mounted_file(settings.haproxy_ssl_cert, settings, now))
    if settings.haproxy_ssl_cert_dir:
        certificates.extend(from_folder(settings.haproxy_ssl_cert_dir, settings.haproxy_ssl_default_cert, settings, now))
    if settings.acme_directory:
        certificates.extend(from_acme(settings, certificates, now))
        return Tls(tuple(certificates))  # none yet: HTTP only until the first certificate is issued
    if not certificates:
        raise CertificateError(
            "ENABLE_SSL is true but there is no usable certificate: put ssl_cert/ssl_key in the service metadata, "
            f"mount a PEM at {settings.haproxy_ssl_cert} or set HAPROXY_SSL_CERT_DIR"
        )
    return Tls(tuple(certificates))


def from_acme(settings: Any, users: Sequence[Certificate], now: datetime.datetime) -> list[Certificate]:
    """Issued certificates in ACME_DIR/certs, after the user's: a name one of the user's
    certificates covers is served by that one, so an ACME certificate for it is left out."""
    folder = os.path.join(settings.acme_dir, "certs")
    if not os.path.isdir(folder):
        return []
    names = [name for cert in users for name in cert.names]
    issued = from_folder(folder, "", settings, now, acme=True)
    return [cert for cert in issued if not all(covers(names, name) for name in cert.names)]


def serving(tls: Tls, host: str) -> Certificate:
    """The certificate haproxy picks for this SNI name: an exact name first, then a wildcard, then the default."""
    for exact in (True, False):
        for cert in tls.certificates:
            if (host in cert.names) if exact else covers(cert.names, host):
                return cert
    return tls.certificates[0]


def report_uncovered(tls: Tls, domain: str, hosts: Iterable[str]) -> None:
    """Log the routed hosts no certificate covers (browsers would warn there)."""
    names = [name for cert in tls.certificates for name in cert.names]
    if f"*.{domain}" in names:
        return
    uncovered = sorted(host for host in hosts if not covers(names, host))
    if uncovered:
        shown = ", ".join(uncovered[:10]) + (f" and {len(uncovered) - 10} more" if len(uncovered) > 10 else "")
        log.warning("no certificate covers *.%s nor %s", domain, shown)
