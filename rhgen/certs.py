"""Certificates: decode and validate with `cryptography` before haproxy ever sees them.

One certificate at a time: PEM or base64 decoding, the chain's order, the key's kind and match,
the validity period. Where certificates come from, and which one serves a host, is tls.py's.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import logging
import re
from collections.abc import Sequence
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
KEY_BLOCK = re.compile(rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)
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
    match = KEY_BLOCK.search(data)
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
