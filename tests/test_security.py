"""Security hygiene: no shell, safe YAML, no key material in any output, keys 0600, stats behind a
password, bandit clean, and the README naming the settings that matter for security."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from tests.support.metadata import container
from tests.support.net import free_port, raw_request
from tests.support.outputs import chain_pem, key_pem
from rhgen.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "rhgen").rglob("*.py"))
SECURITY = "Security hygiene"
APP1 = [container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")]


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_bandit_finds_nothing_in_rhgen(reliability):
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-q", "-r", "rhgen"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr  # e.g. a `# nosec` whose words bandit cannot read
    reliability(SECURITY, "bandit -r rhgen", held="no finding; each ignore inline with its reason")


def test_subprocesses_run_argument_lists_without_a_shell(reliability):
    found = 0
    for path in SOURCES:
        for node, name in calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert name not in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"), where
            assert not any(k.arg == "shell" for k in node.keywords), f"{where}: shell="
            if name.startswith("subprocess."):
                found += 1
                assert node.args and not isinstance(node.args[0], ast.Constant), f"{where}: a command string"
    assert found >= 2  # haproxy -c and RELOAD_COMMAND: the scan does see them
    reliability(SECURITY, "subprocesses: argument lists, no shell", cases=found, held="no shell=, no os.system/popen")


def test_yaml_is_only_read_with_a_safe_loader(reliability):
    found = 0
    for path in SOURCES:
        for node, name in calls(ast.parse(path.read_text(), str(path))):
            if not name.startswith("yaml."):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            assert name not in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"), where
            if name == "yaml.load":
                loader = next((ast.unparse(k.value) for k in node.keywords if k.arg == "Loader"), "")
                assert loader and set(re.findall(r"\w*Loader", loader)) <= {"SafeLoader", "CSafeLoader"}, where
            found += name in ("yaml.safe_load", "yaml.load")
    assert found >= 2  # the settings files and the metadata file
    reliability(SECURITY, "YAML read with a safe loader only", cases=found, held="yaml.safe_load (or a SafeLoader) everywhere")


def test_readme_marks_every_security_relevant_setting():
    readme = (ROOT / "README.md").read_text()
    rows = {line.split("`")[1]: line for line in readme.splitlines() if line.startswith("| `")}
    for setting in SETTINGS:
        assert ("Security-relevant" in rows[setting.env]) == setting.security, setting.env
    assert "Security-relevant settings:" in readme


# --- key material ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs():
    ca = trustme.CA()
    return ca, ca.issue_cert("*.dev.tld", "dev.tld"), ca.issue_cert("*.dev.tld")


def pem_parts(cert) -> tuple[str, str]:
    return chain_pem(cert), key_pem(cert)


def key_lines(key_pem: str) -> list[str]:
    """The secret part of a PEM key: its base64 lines, any 16 characters of which must never show."""
    body = [line for line in key_pem.splitlines() if line and not line.startswith("-----")]
    return [line[i : i + 16] for line in body for i in range(0, max(1, len(line) - 15), 16)]


def test_key_material_is_never_printed_nor_logged(certs, metadata_server, generate, run_rhgen, target, tmp_path, reliability):
    ca, leaf, renewed = certs
    secrets = []
    metadata_server.set(APP1)

    def tls(cert, **extra):
        chain, key = pem_parts(cert)
        secrets.extend(key_lines(key))
        metadata_server.set(metadata={"ssl_cert": chain, "ssl_key": key, **extra})

    env = {"ENABLE_SSL": "true", "HTTPS_PORT": "18443", "HAPROXY_SSL_CRT_LIST": str(target.folder / "crt-list.txt")}
    outputs = []
    tls(leaf)
    outputs.append(generate("-v", "--dry-run", **env))  # a new key
    outputs.append(generate("-vv", **env))
    tls(renewed)
    outputs.append(generate("-v", "--dry-run", **env))  # a changed key: a diff against the live one
    outputs.append(generate("-vv", **env))
    outputs.append(run_rhgen(["routes", "--json", "-v"], {**target.env, **env}))
    mismatched = pem_parts(leaf)[0], pem_parts(renewed)[1]
    metadata_server.set(metadata={"ssl_cert": mismatched[0], "ssl_key": mismatched[1]})
    outputs.append(generate("-v", **env))  # the key does not match: an error naming the problem, not the key
    outputs.append(generate("-v", SSL_BASE64_ENCODED="true", **env))  # a PEM where base64 was expected
    metadata_server.set(metadata={"ssl_cert": pem_parts(leaf)[0], "ssl_key": pem_parts(leaf)[1][:-200]})
    outputs.append(generate("-v", **env))  # a truncated key

    assert [r.returncode for r in outputs] == [0, 0, 0, 0, 0, 1, 1, 1], [r.stderr for r in outputs]
    assert "contents hidden: key material" in outputs[2].stdout
    for result in outputs:
        text = result.stdout + result.stderr
        assert "PRIVATE KEY-----\n" not in text
        assert not [s for s in secrets if s in text]
    reliability(SECURITY, "key material in output", cases=len(outputs),
                held="no 16 characters of a key in stdout or stderr: -v/-vv, --dry-run diffs, routes, errors")


def test_files_with_keys_are_0600_even_over_a_wider_file(certs, metadata_server, generate, target, tmp_path, reliability):
    ca, leaf, renewed = certs
    pem = target.folder / "haproxy.pem"
    pem.write_text("left by the image rhgen replaces\n")
    pem.chmod(0o644)
    calls_log = tmp_path / "staged"
    recorder = tmp_path / "haproxy-recorder"
    # the check's staged copy (key included) sits in a private folder: record its modes too
    recorder.write_text(f'#!/bin/sh\nd=$(dirname "$3")\nstat -c "%a %n" "$d" "$d"/* >> {calls_log}\nexec haproxy "$@"\n')
    recorder.chmod(0o755)
    metadata_server.set(APP1)
    chain, key = pem_parts(leaf)
    metadata_server.set(metadata={"ssl_cert": chain, "ssl_key": key})

    result = generate(
        ENABLE_SSL="true", HTTPS_PORT="18443", HAPROXY_SSL_CRT_LIST=str(target.folder / "crt-list.txt"),
        HAPROXY_BIN=str(recorder),
    )

    assert result.returncode == 0, result.stderr
    assert "BEGIN PRIVATE KEY" in pem.read_text()
    assert pem.stat().st_mode & 0o777 == 0o600
    modes = dict(line.split(" ", 1)[::-1] for line in calls_log.read_text().splitlines())
    folder = next(path for path in modes if not path.startswith(tuple(p + "/" for p in modes)))
    assert modes[folder] == "700" and modes[f"{folder}/cert"] == "600", modes
    reliability(SECURITY, "files holding keys", cases=2,
                held="haproxy.pem 0600 even where a 0644 file stood; the check's staged copy 0600 in a 0700 folder")


# --- the stats page --------------------------------------------------------------------------------


def stats_answer(port: int) -> str:
    """'refused' when nothing listens, else the status of an unauthenticated GET /."""
    try:
        return str(raw_request(port, b"GET / HTTP/1.1\r\nHost: stats\r\n")[0])
    except ConnectionRefusedError:
        return "refused"


@pytest.mark.parametrize("password", ["s3cret-Pass", ""])
def test_stats_page_is_never_served_without_a_password(password, metadata_server, generate, haproxy, target, reliability):
    port = free_port()
    metadata_server.set(APP1)
    result = generate(ENABLE_STATS="true", STATS_PORT=str(port), STATS_PASSWORD=password)
    if result.returncode == 2:  # an empty password refused as a settings error
        assert password == "" and "STATS_PASSWORD" in result.stderr
        reliability(SECURITY, "stats page without a password", held="refused, or asks for credentials (401)")
        return
    assert result.returncode == 0, result.stderr
    config = target.config.read_text()
    haproxy.start()
    answer = stats_answer(port)
    # rhgen may serve no stats page at all; when it serves one, it asks for credentials first
    assert answer in ("refused", "401"), answer
    assert ("stats enable" in config) == (answer != "refused")
    if password:
        assert password not in result.stdout + result.stderr
    reliability(SECURITY, "stats page without a password", held="refused, or asks for credentials (401)")
