"""Faults of the metadata source that tests/test_generate.py does not already cover.

Each one, through `python -m rhgen generate` against a real HTTP server: exit 1, exactly one
error line naming the cause, the live files byte-identical (content, inode, mtime, mode), no
temp file in the live folder nor in TMPDIR. Retries are bounded, with a growing backoff.
"""

from __future__ import annotations

import gzip
import json

import pytest

from tests.support.metadata import APP1, CONTAINERS, SERVICE_METADATA


SOURCE = "Faults of the source"
HELD = "exit 1, one error line, live files byte-identical (content, inode, mtime), no temp file"
CAP = 4096  # RHGEN_MAX_ANSWER_BYTES for the tests of the cap
BIG = json.dumps(APP1 * 200).encode()  # ~100 kB of valid containers
assert len(BIG) > 20 * CAP


def _json(data, **answer):
    return lambda server: server.answer(CONTAINERS, body=json.dumps(data).encode(), **answer)


def _raw(body: bytes, **answer):
    return lambda server: server.answer(CONTAINERS, body=body, **answer)


# name -> (how the source breaks, env for the run, the words the error line must hold)
FAULTS = {
    "DNS failure": (lambda s: None, {"RANCHER_API_HOST": "metadata.invalid"}, "host name not found"),
    "HTTP 502 with an HTML page": (
        _raw(b"<html><body>502 Bad Gateway</body></html>", status=502, content_type="text/html"), {}, "HTTP 502",
    ),
    "HTTP 503": (_json({"message": "starting"}, status=503), {}, "HTTP 503"),
    "redirect, not followed": (
        _raw(b"", status=302, headers={"Location": "http://127.0.0.1:1/elsewhere"}), {}, "HTTP 302",
    ),
    "binary garbage": (_raw(bytes(range(256)) * 4), {}, "not JSON"),
    "deeply nested JSON": (_raw(b"[" * 100_000 + b"]" * 100_000), {}, "not JSON"),
    "containers is null": (_json(None), {}, "containers is a null, expected a list"),
    "containers is a string": (_json("app1-web-1"), {}, "containers is a string, expected a list"),
    "containers is a number": (_json(42), {}, "containers is a number, expected a list"),
    "containers are strings, not objects": (_json(["app1-web-1", "app1-web-2"]), {}, "none of the 2 containers"),
    "containers with null fields": (
        _json([{key: None for key in APP1[0]} for _ in range(3)]), {}, "none of the 3 containers",
    ),
    "containers without keys": (_json([{}, {}]), {}, "none of the 2 containers"),
    "service metadata is a string": (
        lambda s: s.answer_json(SERVICE_METADATA, "aliases: www"), {}, "metadata is a string, expected a mapping",
    ),
    "service metadata hangs (second request)": (
        lambda s: s.answer(SERVICE_METADATA, hang=True), {"RHGEN_READ_TIMEOUT": "0.3"}, "timed out",
    ),
    "answer over the cap (Content-Length)": (_raw(BIG), {"RHGEN_MAX_ANSWER_BYTES": str(CAP)}, f"over the {CAP}-byte cap"),
    "answer over the cap (chunked, no length)": (
        _raw(BIG, chunked=True), {"RHGEN_MAX_ANSWER_BYTES": str(CAP)}, f"over the {CAP}-byte cap",
    ),
    "gzip bomb over the cap": (
        _raw(gzip.compress(b"[" + b" " * 5_000_000 + b"]"), headers={"Content-Encoding": "gzip"}),
        {"RHGEN_MAX_ANSWER_BYTES": str(CAP)},
        f"over the {CAP}-byte cap",
    ),
}


def assert_failed_cleanly(result, words, target, live, scratch):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rhgen: error: metadata ")
    assert words in lines[0]
    assert "Traceback" not in result.stderr
    assert target.snapshot() == live  # content, inode, mtime and mode; no new file either
    assert list(scratch.iterdir()) == []  # no staged set left in TMPDIR


@pytest.fixture
def scratch(tmp_path):
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("fault", FAULTS)
def test_source_fault_exits_1_with_one_line_and_loses_nothing(
    fault, live, metadata_server, generate, target, scratch, reliability
):
    break_source, env, words = FAULTS[fault]
    break_source(metadata_server)

    result = generate(TMPDIR=str(scratch), **env)

    assert_failed_cleanly(result, words, target, live, scratch)
    reliability(SOURCE, fault, held=HELD)


def test_retries_are_bounded_and_back_off(live, metadata_server, generate, target, scratch, reliability):
    metadata_server.answer_json(CONTAINERS, {}, status=503)
    metadata_server.requests.clear()

    result = generate("-v", RHGEN_RETRIES="3", TMPDIR=str(scratch))

    tries = metadata_server.requests_to(CONTAINERS)
    assert len(tries) == 4
    gaps = [later.time - earlier.time for earlier, later in zip(tries, tries[1:])]
    for gap, backoff in zip(gaps, (0.25, 0.5, 1.0)):  # doubling from 0.25 s, at most 2 s
        assert backoff * 0.9 <= gap < backoff + 0.5, gaps
    assert result.stderr.count("; retrying") == 3
    result.stderr = "".join(line for line in result.stderr.splitlines(keepends=True) if "retrying" not in line)
    assert_failed_cleanly(result, "HTTP 503 after 4 tries", target, live, scratch)
    reliability(SOURCE, "retries bounded, with backoff (5xx)", held="exactly 1 + RHGEN_RETRIES requests 0.25, 0.5, 1 s apart; " + HELD)


def test_a_hanging_server_is_retried_within_the_bound(live, metadata_server, generate, target, scratch, reliability):
    metadata_server.answer(CONTAINERS, hang=True)
    metadata_server.requests.clear()

    result = generate(RHGEN_RETRIES="1", RHGEN_READ_TIMEOUT="0.3", TMPDIR=str(scratch))

    assert len(metadata_server.requests_to(CONTAINERS)) == 2
    assert_failed_cleanly(result, "timed out after 2 tries", target, live, scratch)
    reliability(SOURCE, "retries bounded (read timeout)", held="exactly 1 + RHGEN_RETRIES requests; " + HELD)


@pytest.mark.parametrize("fault", ["redirect, not followed", "binary garbage", "answer over the cap (Content-Length)", "containers are strings, not objects"])
def test_answers_that_cannot_improve_are_not_retried(fault, live, metadata_server, generate, target, scratch):
    break_source, env, words = FAULTS[fault]
    break_source(metadata_server)
    metadata_server.requests.clear()

    result = generate(RHGEN_RETRIES="3", TMPDIR=str(scratch), **env)

    assert len(metadata_server.requests_to(CONTAINERS)) == 1
    assert_failed_cleanly(result, words, target, live, scratch)


def test_answer_just_under_the_cap_is_read(metadata_server, generate, target):
    body = json.dumps(APP1).encode()
    metadata_server.answer(CONTAINERS, body=body, chunked=True)
    result = generate(RHGEN_MAX_ANSWER_BYTES=str(max(len(body), 1024)))
    assert result.returncode == 0, result.stderr
    assert "app1.dev.tld app1" in target.map.read_text()


def test_one_broken_container_among_good_ones_is_skipped_alone(metadata_server, generate, target):
    # the "none is usable" rule is for answers of the wrong shape, not for one odd container
    metadata_server.set(APP1 + ["junk", {}, {**APP1[0], "stack_name": None, "name": "nameless"}])
    result = generate()
    assert result.returncode == 0, result.stderr
    assert "app1.dev.tld app1" in target.map.read_text()
    assert len([line for line in result.stderr.splitlines() if line.startswith("rhgen: warning:")]) == 3


def test_deeply_nested_metadata_file_is_one_clear_error(run_rhgen, target, tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text("[" * 100_000 + "]" * 100_000)
    result = run_rhgen(["generate"], {**target.env, "DISABLE_METADATA": "true", "METADATA_FILE": str(answers)})
    assert result.returncode == 1
    assert result.stderr == f"rhgen: error: metadata file {answers}: neither JSON nor YAML\n"
