"""Real TLS through a real haproxy: SNI, ALPN h2, routing over HTTPS, redirects, certificate rotation."""

from __future__ import annotations

import http.client
import socket
import ssl
import time

import pytest
import trustme
from cryptography import x509

from tests.support.metadata import DOMAIN, container
from tests.support.net import free_port


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def pem_of(cert) -> tuple[str, str]:
    chain = "".join(blob.bytes().decode() for blob in cert.cert_chain_pems)
    return chain, cert.private_key_pem.bytes().decode()


@pytest.fixture
def tls_site(ca, target, metadata_server, backend_servers):
    """app1 at 127.0.0.11 behind HTTPS with a *.dev.tld certificate from metadata."""
    backend = backend_servers.start("127.0.0.11", "app1-web-1")
    metadata_server.set([container("app1", "web", "127.0.0.11", backend.port, name="app1-web-1")])
    chain, key = pem_of(ca.issue_cert(f"*.{DOMAIN}"))
    metadata_server.set(metadata={"ssl_cert": chain, "ssl_key": key})
    target.https_port = free_port()
    target.env.update(
        ENABLE_SSL="true",
        HTTPS_PORT=str(target.https_port),
        HAPROXY_SSL_CRT_LIST=str(target.folder / "crt-list.txt"),
    )
    return target


def tls_connect(ca, port: int, server_name: str | None, alpn: list[str] | None = None) -> ssl.SSLSocket:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if server_name is None:
        context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname=server_name)


def https_get(ca, port: int, host: str, path: str = "/") -> tuple[int, str, dict[str, str]]:
    with tls_connect(ca, port, host) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.read().decode(), {k.lower(): v for k, v in response.getheaders()}


def served_certificate(ca, port: int, server_name: str | None) -> x509.Certificate:
    with tls_connect(ca, port, server_name) as sock:
        return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))


def test_https_routes_by_host_and_negotiates_h2(ca, tls_site, generate, haproxy):
    assert generate().returncode == 0
    haproxy.start()
    status, body, _ = https_get(ca, tls_site.https_port, f"app1.{DOMAIN}")
    assert (status, body) == (200, "app1-web-1")
    assert https_get(ca, tls_site.https_port, f"nope.{DOMAIN}")[0] == 503
    with tls_connect(ca, tls_site.https_port, f"app1.{DOMAIN}", alpn=["h2", "http/1.1"]) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        assert sock.version() in ("TLSv1.2", "TLSv1.3")


def test_https_sets_x_forwarded_proto(ca, tls_site, generate, haproxy, backend_servers):
    assert generate().returncode == 0
    haproxy.start()
    https_get(ca, tls_site.https_port, f"app1.{DOMAIN}")
    assert backend_servers["127.0.0.11"].last_headers["x-forwarded-proto"] == "https"
    haproxy.get(f"app1.{DOMAIN}", "/", headers={"X-Forwarded-Proto": "https"})
    assert backend_servers["127.0.0.11"].last_headers["x-forwarded-proto"] == "http"


def _handshake(port: int, version: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.minimum_version = context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer old versions: the server must say no
    try:
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5)) as sock:
            return sock.version()
    except ssl.SSLError as exc:
        return exc.reason or str(exc)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
def test_tls_below_1_2_is_refused_by_the_server(ca, tls_site, generate, haproxy):
    assert generate().returncode == 0
    haproxy.start()
    assert _handshake(tls_site.https_port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(tls_site.https_port, ssl.TLSVersion.TLSv1_1) == "TLSV1_ALERT_PROTOCOL_VERSION"


def test_sni_picks_the_certificate_from_the_folder(ca, tls_site, generate, haproxy, metadata_server):
    metadata_server.set(metadata={})
    folder = tls_site.folder.parent / "certs"
    folder.mkdir()
    for name, host in (("a.pem", f"app1.{DOMAIN}"), ("b.pem", f"other.{DOMAIN}")):
        chain, key = pem_of(ca.issue_cert(host))
        (folder / name).write_text(chain + key)
    result = generate(HAPROXY_SSL_CERT_DIR=str(folder), HAPROXY_SSL_DEFAULT_CERT="b.pem")
    assert result.returncode == 0, result.stderr
    haproxy.start()
    names = lambda cert: cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)  # noqa: E731
    assert names(served_certificate(ca, tls_site.https_port, f"app1.{DOMAIN}")) == [f"app1.{DOMAIN}"]
    assert names(served_certificate(ca, tls_site.https_port, f"other.{DOMAIN}")) == [f"other.{DOMAIN}"]
    assert names(served_certificate(ca, tls_site.https_port, None)) == [f"other.{DOMAIN}"]  # the named default


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_http_redirects_to_https_with_host_path_and_query(ca, tls_site, generate, haproxy, code):
    result = generate(ENABLE_SSL_REDIRECTION="true", SSL_REDIRECTION_TYPE=str(code))
    assert result.returncode == 0, result.stderr
    haproxy.start()
    connection = http.client.HTTPConnection("127.0.0.1", tls_site.port, timeout=5)
    connection.request("GET", "/a/b?x=1&y=2", headers={"Host": f"app1.{DOMAIN}:{tls_site.port}"})
    response = connection.getresponse()
    assert response.status == code
    assert response.getheader("Location") == f"https://app1.{DOMAIN}:{tls_site.https_port}/a/b?x=1&y=2"


def test_acme_challenge_is_not_redirected(ca, tls_site, generate, haproxy):
    assert generate(ENABLE_SSL_REDIRECTION="true").returncode == 0
    haproxy.start()
    assert haproxy.get(f"app1.{DOMAIN}", "/.well-known/acme-challenge/token-123") == (200, "app1-web-1")
    assert haproxy.get(f"app1.{DOMAIN}", "/.well-known/other")[0] == 301


def test_hsts_header_on_https_only_when_asked(ca, tls_site, generate, haproxy):
    assert generate(HSTS_MAX_AGE="31536000").returncode == 0
    haproxy.start()
    headers = https_get(ca, tls_site.https_port, f"app1.{DOMAIN}")[2]
    assert headers["strict-transport-security"] == "max-age=31536000"


def test_rotated_certificate_is_served_after_the_reload(ca, tls_site, generate, haproxy, metadata_server):
    assert generate().returncode == 0
    haproxy.start()
    first = served_certificate(ca, tls_site.https_port, f"app1.{DOMAIN}")
    chain, key = pem_of(ca.issue_cert(f"*.{DOMAIN}"))
    metadata_server.set(metadata={"ssl_cert": chain, "ssl_key": key})
    result = generate(RELOAD_COMMAND=f"kill -USR2 {haproxy.process.pid}")
    assert result.returncode == 0, result.stderr
    assert "haproxy.pem" in result.stdout and "reloaded" in result.stdout
    deadline = time.monotonic() + 10
    while served_certificate(ca, tls_site.https_port, f"app1.{DOMAIN}").serial_number == first.serial_number:
        assert time.monotonic() < deadline, "the new certificate was not served after the reload"
        time.sleep(0.05)
