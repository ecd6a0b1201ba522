"""Certificates are validated with cryptography before haproxy sees them; bad ones change nothing."""

from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.support.outputs import chain_pem, key_pem


NOW = datetime.datetime.now(datetime.timezone.utc)
DOMAIN = "dev.tld"

CONTAINERS = [
    {
        "name": "app1-web-1", "uuid": "u-1", "stack_name": "app1", "service_name": "web",
        "primary_ip": "127.0.0.11", "state": "running", "health_state": None,
        "labels": {"map-public-http": "8080"},
    }
]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca):
    return ca.issue_cert(f"*.{DOMAIN}", DOMAIN)


class Env:
    """A target folder, an answers file and the environment to run rhgen on them."""

    def __init__(self, root: Path):
        self.root = root
        self.out = root / "out"
        self.out.mkdir(parents=True)
        self.metadata_file = root / "metadata.json"
        self.env = {
            "PATH": os.environ["PATH"],
            "STACK_DOMAIN": DOMAIN,
            "BIND_ADDRESS": "127.0.0.1",
            "HTTP_PORT": "18080",
            "HTTPS_PORT": "18443",
            "ENABLE_SSL": "true",
            "DISABLE_METADATA": "true",
            "METADATA_FILE": str(self.metadata_file),
            "HAPROXY_CONFIG": str(self.out / "haproxy.cfg"),
            "HAPROXY_BACKEND_CONFIG": str(self.out / "backends.cfg"),
            "HAPROXY_DOMAIN_MAP": str(self.out / "domain.map"),
            "HAPROXY_SSL_CERT": str(self.out / "haproxy.pem"),
            "HAPROXY_SSL_CRT_LIST": str(self.out / "crt-list.txt"),
        }
        self.metadata({})

    def metadata(self, service_metadata: dict) -> None:
        self.metadata_file.write_text(json.dumps({"containers": CONTAINERS, "self_service_metadata": service_metadata}))

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rhgen", "generate", *args],
            env={**self.env, **env}, cwd=self.root, capture_output=True, text=True, timeout=60,
        )

    def snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.out.iterdir())}


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path)


def error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("rhgen: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_metadata_certificate_is_written_0600_with_chain_and_key(env, leaf):
    env.metadata({"ssl_cert": chain_pem(leaf), "ssl_key": key_pem(leaf)})
    result = env.run()
    assert result.returncode == 0, result.stderr
    pem = env.out / "haproxy.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    data = pem.read_bytes()
    assert data.count(b"BEGIN CERTIFICATE") == 1 and b"BEGIN PRIVATE KEY" in data
    assert x509.load_pem_x509_certificate(data).subject == x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).subject
    assert str(pem) in (env.out / "crt-list.txt").read_text()


def test_unchanged_certificate_is_not_rewritten(env, leaf):
    env.metadata({"ssl_cert": chain_pem(leaf), "ssl_key": key_pem(leaf)})
    assert env.run().returncode == 0
    before = (env.out / "haproxy.pem").stat()
    result = env.run()
    assert result.returncode == 0 and "no change" in result.stdout
    after = (env.out / "haproxy.pem").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)


def test_base64_metadata_with_or_without_line_breaks(env, leaf):
    one_line = base64.b64encode(chain_pem(leaf).encode()).decode()
    wrapped = base64.encodebytes(key_pem(leaf).encode()).decode()  # 76-column lines
    env.metadata({"ssl_cert": one_line, "ssl_key": wrapped})
    result = env.run(SSL_BASE64_ENCODED="true")
    assert result.returncode == 0, result.stderr
    assert b"BEGIN PRIVATE KEY" in (env.out / "haproxy.pem").read_bytes()


@pytest.mark.parametrize(
    "key_format",
    [serialization.PrivateFormat.TraditionalOpenSSL, serialization.PrivateFormat.PKCS8],
    ids=["pkcs1", "pkcs8"],
)
def test_rsa_key_in_pkcs1_or_pkcs8_is_accepted_by_haproxy(env, ca, key_format):
    cert = ca.issue_cert(f"*.{DOMAIN}", key_type=trustme.KeyType.RSA)
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    pem = key.private_bytes(serialization.Encoding.PEM, key_format, serialization.NoEncryption()).decode()
    env.metadata({"ssl_cert": chain_pem(cert), "ssl_key": pem})
    result = env.run()
    assert result.returncode == 0, result.stderr


def _ed25519_leaf(ca) -> tuple[str, str]:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, f"*.{DOMAIN}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"*.{DOMAIN}")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_text = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_text


def test_ed25519_key_is_accepted(env, ca):
    cert, key = _ed25519_leaf(ca)
    env.metadata({"ssl_cert": cert, "ssl_key": key})
    result = env.run()
    assert result.returncode == 0, result.stderr


def _bad_inputs(ca, leaf):
    other = ca.issue_cert(f"*.{DOMAIN}")
    child_ca = ca.create_child_ca()
    chained = child_ca.issue_cert(f"*.{DOMAIN}")
    leaf_pem, intermediate_pem = (blob.bytes().decode() for blob in chained.cert_chain_pems[:2])
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    expired = ca.issue_cert(f"*.{DOMAIN}", not_before=NOW - datetime.timedelta(days=30), not_after=NOW - datetime.timedelta(days=1))
    future = ca.issue_cert(f"*.{DOMAIN}", not_before=NOW + datetime.timedelta(days=2), not_after=NOW + datetime.timedelta(days=30))
    good_cert, good_key = chain_pem(leaf), key_pem(leaf)
    return {
        "garbage PEM": ({"ssl_cert": "-----BEGIN CERTIFICATE-----\nnot really\n-----END CERTIFICATE-----\n", "ssl_key": good_key}, {}, "metadata ssl_cert: certificate 1 is not a valid PEM certificate"),
        "no PEM at all": ({"ssl_cert": "hello", "ssl_key": good_key}, {}, "metadata ssl_cert: not a PEM"),
        "bad base64": ({"ssl_cert": "@@@not base64@@@", "ssl_key": "@@@"}, {"SSL_BASE64_ENCODED": "true"}, "metadata ssl_cert: not valid base64 of a PEM"),
        "base64 without the flag": ({"ssl_cert": base64.b64encode(good_cert.encode()).decode(), "ssl_key": good_key}, {}, "set SSL_BASE64_ENCODED=true"),
        "PEM with the flag": ({"ssl_cert": good_cert, "ssl_key": good_key}, {"SSL_BASE64_ENCODED": "true"}, "already PEM but SSL_BASE64_ENCODED is true"),
        "key mismatch": ({"ssl_cert": good_cert, "ssl_key": key_pem(other)}, {}, "private key does not match the certificate"),
        "encrypted key": ({"ssl_cert": good_cert, "ssl_key": encrypted}, {}, "private key is encrypted"),
        "expired": ({"ssl_cert": chain_pem(expired), "ssl_key": key_pem(expired)}, {}, "expired on"),
        "not yet valid": ({"ssl_cert": chain_pem(future), "ssl_key": key_pem(future)}, {}, "is not valid before"),
        "wrong order": ({"ssl_cert": intermediate_pem + leaf_pem, "ssl_key": key_pem(chained)}, {}, "chain in the wrong order: the leaf (the one matching the key) is certificate 2"),
        "wrong chain": ({"ssl_cert": leaf_pem + chain_pem(other), "ssl_key": key_pem(chained)}, {}, "did not issue certificate 1"),
        "key without certificate": ({"ssl_key": good_key}, {}, "metadata has ssl_key but no ssl_cert"),
    }


BAD_CASES = [
    "garbage PEM", "no PEM at all", "bad base64", "base64 without the flag", "PEM with the flag", "key mismatch",
    "encrypted key", "expired", "not yet valid", "wrong order", "wrong chain", "key without certificate",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_certificate_exits_1_naming_the_problem_and_changes_nothing(env, ca, leaf, case):
    env.metadata({"ssl_cert": chain_pem(leaf), "ssl_key": key_pem(leaf)})
    assert env.run().returncode == 0
    before = env.snapshot()
    metadata, extra_env, message = _bad_inputs(ca, leaf)[case]
    env.metadata(metadata)
    result = env.run(**extra_env)
    assert result.returncode == 1, result.stderr
    assert message in error_line(result)
    assert env.snapshot() == before


def test_intermediate_after_leaf_is_served_in_order(env, ca):
    chained = ca.create_child_ca().issue_cert(f"*.{DOMAIN}")
    env.metadata({"ssl_cert": chain_pem(chained), "ssl_key": key_pem(chained)})
    result = env.run()
    assert result.returncode == 0, result.stderr
    certs = x509.load_pem_x509_certificates((env.out / "haproxy.pem").read_bytes())
    assert len(certs) == 2  # leaf and intermediate; the root stays with the clients
    certs[0].verify_directly_issued_by(certs[1])


def test_ssl_without_any_certificate_is_an_error(env):
    result = env.run()
    assert result.returncode == 1
    assert "no usable certificate" in error_line(result)
    assert env.snapshot() == {}


def test_mounted_pem_is_validated_and_never_overwritten(env, leaf):
    mounted = env.out / "haproxy.pem"
    content = (chain_pem(leaf) + key_pem(leaf)).encode()
    mounted.write_bytes(content)
    mounted.chmod(0o640)
    before = mounted.stat()
    result = env.run()
    assert result.returncode == 0, result.stderr
    after = mounted.stat()
    assert mounted.read_bytes() == content
    assert (before.st_ino, before.st_mtime_ns, after.st_mode & 0o777) == (after.st_ino, after.st_mtime_ns, 0o640)
    assert "haproxy.pem" not in result.stdout


def test_bad_mounted_pem_is_an_error_naming_the_file(env, ca):
    expired = ca.issue_cert(f"*.{DOMAIN}", not_before=NOW - datetime.timedelta(days=9), not_after=NOW - datetime.timedelta(days=2))
    mounted = env.out / "haproxy.pem"
    mounted.write_text(chain_pem(expired) + key_pem(expired))
    result = env.run()
    assert result.returncode == 1
    assert f"certificate file {mounted}: the certificate expired on" in error_line(result)


def test_renewed_mounted_pem_changes_the_crt_list_so_haproxy_reloads(env, ca, leaf):
    mounted = env.out / "haproxy.pem"
    mounted.write_text(chain_pem(leaf) + key_pem(leaf))
    assert env.run().returncode == 0
    renewed = ca.issue_cert(f"*.{DOMAIN}")
    mounted.write_text(chain_pem(renewed) + key_pem(renewed))
    result = env.run()
    assert result.returncode == 0
    assert result.stdout.strip().endswith("changed: crt-list.txt")


def test_certificate_expiring_soon_logs_a_warning(env, ca):
    soon = ca.issue_cert(f"*.{DOMAIN}", not_after=NOW + datetime.timedelta(days=5))
    env.metadata({"ssl_cert": chain_pem(soon), "ssl_key": key_pem(soon)})
    result = env.run()
    assert result.returncode == 0
    assert "expires on" in result.stderr and "less than 14 days" in result.stderr
    quiet = Env(env.root / "second")
    quiet.metadata({"ssl_cert": chain_pem(soon), "ssl_key": key_pem(soon)})
    assert "expires on" not in quiet.run(SSL_EXPIRY_WARNING_DAYS="3").stderr


def test_certificate_not_covering_routed_hosts_logs_them(env, ca):
    narrow = ca.issue_cert("other.example.com")
    env.metadata({"ssl_cert": chain_pem(narrow), "ssl_key": key_pem(narrow), "aliases": {"app1": ["www"]}})
    result = env.run()
    assert result.returncode == 0
    assert f"no certificate covers *.{DOMAIN} nor app1.{DOMAIN}, www.{DOMAIN}" in result.stderr


def test_folder_skips_a_bad_file_with_a_warning_and_lists_the_good_ones(env, ca):
    folder = env.root / "certs"
    folder.mkdir()
    good = ca.issue_cert(f"app1.{DOMAIN}")
    (folder / "app1.pem").write_text(chain_pem(good) + key_pem(good))
    (folder / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    result = env.run(HAPROXY_SSL_CERT_DIR=str(folder))
    assert result.returncode == 0, result.stderr
    assert f"certificate file {folder / 'broken.pem'}: certificate 1 is not a valid PEM certificate; skipped" in result.stderr
    listed = [line for line in (env.out / "crt-list.txt").read_text().splitlines() if not line.startswith("#")]
    assert listed == [str(folder / "app1.pem")]


def test_folder_with_separate_key_file(env, ca):
    folder = env.root / "certs"
    folder.mkdir()
    cert = ca.issue_cert(f"app1.{DOMAIN}")
    (folder / "app1.pem").write_text(chain_pem(cert))
    (folder / "app1.pem.key").write_text(key_pem(cert))
    result = env.run(HAPROXY_SSL_CERT_DIR=str(folder))
    assert result.returncode == 0, result.stderr


def test_named_default_certificate_that_is_missing_is_an_error(env, ca, leaf):
    folder = env.root / "certs"
    folder.mkdir()
    (folder / "a.pem").write_text(chain_pem(leaf) + key_pem(leaf))
    result = env.run(HAPROXY_SSL_CERT_DIR=str(folder), HAPROXY_SSL_DEFAULT_CERT="b.pem")
    assert result.returncode == 1
    assert "default certificate 'b.pem' is not there" in error_line(result)


def test_dry_run_diff_never_shows_key_material(env, leaf):
    env.metadata({"ssl_cert": chain_pem(leaf), "ssl_key": key_pem(leaf)})
    result = env.run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert "contents hidden" in result.stdout
    assert "PRIVATE KEY" not in result.stdout + result.stderr
    assert env.snapshot() == {}


@pytest.mark.parametrize("code", ["305", "200", "abc"])
def test_invalid_redirect_type_is_a_settings_error(env, leaf, code):
    env.metadata({"ssl_cert": chain_pem(leaf), "ssl_key": key_pem(leaf)})
    result = env.run(ENABLE_SSL_REDIRECTION="true", SSL_REDIRECTION_TYPE=code)
    assert result.returncode == 2
    assert "SSL_REDIRECTION_TYPE" in error_line(result)


def test_redirect_on_port_443_has_no_port_in_location(env, leaf):
    env.metadata({"ssl_cert": chain_pem(leaf), "ssl_key": key_pem(leaf)})
    result = env.run(ENABLE_SSL_REDIRECTION="true", HTTPS_PORT="443")
    assert result.returncode == 0, result.stderr
    config = (env.out / "haproxy.cfg").read_text()
    assert "location https://%[req.hdr(host),host_only]%[pathq] code 301" in config


def test_the_same_answers_with_a_new_certificate_file_in_the_folder_are_rendered_again(env, ca):
    folder = env.root / "certs"
    folder.mkdir()
    first = ca.issue_cert(f"app1.{DOMAIN}")
    (folder / "app1.pem").write_text(chain_pem(first) + key_pem(first))
    assert env.run(HAPROXY_SSL_CERT_DIR=str(folder)).returncode == 0
    assert env.run(HAPROXY_SSL_CERT_DIR=str(folder)).stdout.endswith("no change\n")
    assert (env.out / ".rhgen.answers").exists()  # the next run with the same answers file may skip decoding it
    second = ca.issue_cert(f"www.{DOMAIN}")
    (folder / "www.pem").write_text(chain_pem(second) + key_pem(second))
    result = env.run(HAPROXY_SSL_CERT_DIR=str(folder))
    assert result.returncode == 0, result.stderr
    assert "crt-list.txt" in result.stdout.rsplit("changed: ", 1)[-1]
    assert str(folder / "www.pem") in (env.out / "crt-list.txt").read_text()
