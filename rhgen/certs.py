"""Certificates: decode and validate with `cryptography` before haproxy ever sees them.

Three sources, in this order of precedence for the default certificate:
  1. `ssl_cert` + `ssl_key` in the proxy service's metadata (PEM, or base64 of the PEM),
     written by rhgen to HAPROXY_SSL_CERT;
  2. a combined PEM the user mounted at HAPROXY_SSL_CERT (validated, never written);
  3. a folder of PEM files (HAPROXY_SSL_CERT_DIR), one per domain, chosen by SNI.
A bad certificate from 1 or 2 is an error; a bad file in the folder is skipped with a
warning, since haproxy only loads the files rhgen lists in the crt-list.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

from .errors import CertificateError

log = logging.getLogger(__name__)

_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
_KEY_BLOCK = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9_.@+=,-]+\Z")
_SIDE_FILES = (".key", ".ocsp", ".issuer", ".sctl")
SUPPORTED_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)


@dataclass(frozen=True)
class Certificate:
    """One validated certificate as haproxy will load it."""

    source: str  # what a message names: "metadata ssl_cert", "file /x/y.pem"
    path: str  # the file haproxy reads
    pem: bytes  # normalised chain (leaf first) + PKCS#8 key; written only when `write` is set
    digest: str  # sha256 of what haproxy reads, so a changed certificate changes the crt-list
    names: tuple[str, ...]
    not_after: datetime.datetime
    write: bool  # True when rhgen writes `pem` to `path` (the metadata source)
    acme: bool = False  # issued by rhgen's ACME stage; renewed in place through the runtime API
    issuer: str = ""  # of the leaf, for `rhgen certs`


@dataclass(frozen=True)
class Tls:
    certificates: tuple[Certificate, ...]  # the first one is the default (no SNI match)


# --- decoding ---------------------------------------------------------------------------------


def _looks_like_pem(text: str) -> bool:
    return "-----BEGIN " in text


def _b64_to_pem(text: str) -> str | None:
    try:
        decoded = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded_text = decoded.decode("ascii")
    except UnicodeDecodeError:
        return None
    return decoded_text if _looks_like_pem(decoded_text) else None


def decode_metadata_value(value: Any, key: str, base64_encoded: bool) -> bytes:
    """The PEM bytes behind metadata `ssl_cert`/`ssl_key`, explaining a wrong SSL_BASE64_ENCODED."""
    source = f"metadata {key}"
    if not isinstance(value, str) or not value.strip():
        raise CertificateError(f"{source}: expected a PEM text, got {type(value).__name__}")
    if base64_encoded:
        if _looks_like_pem(value):
            raise CertificateError(f"{source} is already PEM but SSL_BASE64_ENCODED is true; set it to false")
        pem = _b64_to_pem(value)
        if pem is None:
            raise CertificateError(f"{source}: not valid base64 of a PEM (SSL_BASE64_ENCODED is true)")
        return pem.encode("ascii")
    if not _looks_like_pem(value):
        if _b64_to_pem(value) is not None:
            raise CertificateError(f"{source} looks like base64 of a PEM; set SSL_BASE64_ENCODED=true")
        raise CertificateError(f"{source}: not a PEM (no -----BEGIN line)")
    return value.encode("utf-8")


def parse_chain(data: bytes, source: str) -> list[x509.Certificate]:
    blocks = _CERT_BLOCK.findall(data)
    if not blocks:
        raise CertificateError(f"{source}: no certificate found")
    chain = []
    for number, block in enumerate(blocks, 1):
        try:
            chain.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise CertificateError(f"{source}: certificate {number} is not a valid PEM certificate") from None
    return chain


def parse_key(data: bytes, source: str) -> Any:
    match = _KEY_BLOCK.search(data)
    if not match:
        raise CertificateError(f"{source}: no private key found")
    if match.group(1) == b"ENCRYPTED ":
        raise CertificateError(f"{source}: the private key is encrypted; haproxy needs it without a passphrase")
    try:
        key = serialization.load_pem_private_key(match.group(0), password=None)
    except TypeError:
        raise CertificateError(f"{source}: the private key is encrypted; haproxy needs it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(f"{source}: the private key is not a valid PEM key") from None
    if not isinstance(key, SUPPORTED_KEYS):
        raise CertificateError(f"{source}: unsupported key type {type(key).__name__} (use RSA, EC or Ed25519)")
    return key


# --- validation -------------------------------------------------------------------------------


def _public_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def dns_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        san = None
    names = san.get_values_for_type(x509.DNSName) if san is not None else []
    if not names:  # old certificates name their host only in the subject CN
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return tuple(n.lower() for n in names)


def covers(names: Iterable[str], host: str) -> bool:
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def validate(chain: Sequence[x509.Certificate], key: Any, source: str, now: datetime.datetime, warn_days: int) -> None:
    key_der = _public_der(key.public_key())
    matching = [n for n, cert in enumerate(chain, 1) if _public_der(cert.public_key()) == key_der]
    if not matching:
        raise CertificateError(f"{source}: the private key does not match the certificate")
    if matching[0] != 1:
        raise CertificateError(
            f"{source}: chain in the wrong order: the leaf (the one matching the key) is certificate "
            f"{matching[0]}; put it first, then each issuer in order"
        )
    for position, (child, issuer) in enumerate(zip(chain, chain[1:]), 1):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise CertificateError(
                f"{source}: certificate {position + 1} did not issue certificate {position}; "
                "put the leaf first, then each issuer in order"
            ) from None
    for position, cert in enumerate(chain, 1):
        which = "the certificate" if position == 1 else f"chain certificate {position}"
        if cert.not_valid_before_utc > now:
            raise CertificateError(f"{source}: {which} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
        if cert.not_valid_after_utc < now:
            raise CertificateError(f"{source}: {which} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    expires = min(cert.not_valid_after_utc for cert in chain)
    if expires - now < datetime.timedelta(days=warn_days):
        log.warning("%s: expires on %s UTC, in less than %d days", source, f"{expires:%Y-%m-%d %H:%M}", warn_days)


def combined_pem(chain: Sequence[x509.Certificate], key: Any) -> bytes:
    """Leaf, intermediates, then the key as unencrypted PKCS#8: what haproxy reads, nothing else."""
    certs = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
    return certs + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_bundle(
    cert_data: bytes,
    key_data: bytes,
    source: str,
    path: str,
    write: bool,
    now: datetime.datetime,
    warn_days: int,
    parts: tuple[str, str] | None = None,
    acme: bool = False,
) -> Certificate:
    """Parse and validate one certificate; `parts` names the sources of chain and key when they differ."""
    cert_source, key_source = parts or (source, source)
    chain = parse_chain(cert_data, cert_source)
    key = parse_key(key_data, key_source)
    validate(chain, key, source, now, warn_days)
    pem = combined_pem(chain, key)
    served = pem if write else cert_data if cert_data is key_data else cert_data + key_data
    return Certificate(
        source=source,
        path=path,
        pem=pem if write else b"",
        digest=hashlib.sha256(served).hexdigest(),
        names=dns_names(chain[0]),
        not_after=chain[0].not_valid_after_utc,
        write=write,
        acme=acme,
        issuer=chain[0].issuer.rfc4514_string(),
    )


# --- the three sources ------------------------------------------------------------------------


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
            key_data = data if _KEY_BLOCK.search(data) or not os.path.isfile(key_path) else _read(key_path, source)
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
