"""`rhgen generate` as a user runs it: real metadata server, real `haproxy -c`, files in a real folder."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import stat
import time
from pathlib import Path

import pytest

from tests.support.metadata import APP1, APP2, CONTAINERS, LABEL, NOT_FOUND, PROXY_LABEL, SERVICE_METADATA, container
from tests.support.outputs import error_lines, map_entries, script, seed_style_config, server_lines, warning_lines
from tests.support.net import free_port
from rhgen import resources

# --- no change ---------------------------------------------------------------------------------


def test_unchanged_source_rewrites_nothing_and_never_runs_haproxy(live, metadata_server, generate, target, tmp_path):
    calls = tmp_path / "haproxy-calls"
    recorder = script(tmp_path / "haproxy-recorder", f'echo "$@" >> {calls}\nexec haproxy "$@"\n')

    result = generate(HAPROXY_BIN=str(recorder))

    assert result.returncode == 0, result.stderr
    assert result.stdout == "2 hosts → 1 backends, 2 servers; no change\n"
    assert result.stderr == ""
    # content, inode, mtime, mode; the one new file is the record of the answers (fingerprint.py)
    recorded = target.snapshot()
    assert {name: value for name, value in recorded.items() if name != ".rhgen.answers"} == live
    assert ".rhgen.answers" in recorded
    again = generate(HAPROXY_BIN=str(recorder))
    assert again.stdout == result.stdout and again.stderr == ""
    assert target.snapshot() == recorded  # the next run with the same answers writes nothing at all
    assert not calls.exists()

    # the recorder does record when there is something to check
    metadata_server.set(APP1 + APP2)
    assert generate(HAPROXY_BIN=str(recorder)).returncode == 0
    assert calls.read_text().startswith("-c -f ")


# --- the source fails ----------------------------------------------------------------------------


def _refuse(server, env):
    env["RANCHER_API_HOST"] = f"127.0.0.1:{free_port()}"


SOURCE_FAILURES = {
    "refused": (_refuse, "connection refused"),
    "500": (lambda s, env: s.answer_json(CONTAINERS, {"message": "boom"}, status=500), "HTTP 500"),
    "404 on containers": (lambda s, env: s.answer_json(CONTAINERS, NOT_FOUND, status=404), "HTTP 404"),
    "403 on metadata": (lambda s, env: s.answer_json(SERVICE_METADATA, {}, status=403), "HTTP 403"),
    "not JSON": (lambda s, env: s.answer(CONTAINERS, body=b"<html>oops</html>", content_type="text/html"), "not JSON"),
    "empty answer": (lambda s, env: s.answer(CONTAINERS, body=b""), "not JSON"),
    "answer cut short": (lambda s, env: s.answer(CONTAINERS, body=json.dumps(APP1).encode(), cut=20), "cut short"),
    "object, not list": (lambda s, env: s.answer_json(CONTAINERS, {"data": APP1}), "expected a list"),
    "metadata is a list": (lambda s, env: s.answer_json(SERVICE_METADATA, ["www"]), "expected a mapping"),
    "read timeout": (
        lambda s, env: (s.answer(CONTAINERS, hang=True), env.update(RHGEN_READ_TIMEOUT="0.3")),
        "timed out",
    ),
    "slower than the read timeout": (
        lambda s, env: (s.answer(CONTAINERS, body=json.dumps(APP1).encode(), delay=1.0), env.update(RHGEN_READ_TIMEOUT="0.3")),
        "timed out",
    ),
}


@pytest.mark.parametrize("failure", SOURCE_FAILURES)
def test_source_failure_exits_1_with_one_error_line_and_leaves_live_files_alone(
    failure, live, metadata_server, generate, target
):
    break_source, reason = SOURCE_FAILURES[failure]
    env: dict[str, str] = {}
    break_source(metadata_server, env)

    result = generate(**env)

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("rhgen: error: ")
    assert reason in result.stderr
    assert target.snapshot() == live


def test_metadata_trickling_in_slower_than_the_read_timeout_fails(live, metadata_server, generate, target):
    # every single byte arrives within the timeout, the whole answer does not
    body = json.dumps(APP1).encode()
    metadata_server.answer(CONTAINERS, body=body, drip=0.05)  # the whole answer would take 30 s and more
    assert len(body) * 0.05 > 30

    started = time.monotonic()
    result = generate(RHGEN_READ_TIMEOUT="0.5")

    assert time.monotonic() - started < 5
    assert result.returncode == 1
    assert error_lines(result) and "read timeout" in result.stderr
    assert target.snapshot() == live


def test_chunked_and_gzip_encoded_answers_are_read(metadata_server, generate, target):
    metadata_server.answer(CONTAINERS, body=json.dumps(APP1).encode(), chunked=True)
    metadata_server.answer(
        SERVICE_METADATA, body=gzip.compress(json.dumps({"aliases": {"app1": "www"}}).encode()),
        headers={"Content-Encoding": "gzip"},
    )
    result = generate()
    assert result.returncode == 0, result.stderr
    assert map_entries(target) == {"app1.dev.tld": "app1", "www.dev.tld": "app1"}


def test_5xx_is_retried_as_often_as_configured(live, metadata_server, generate, target):
    metadata_server.answer_json(CONTAINERS, {}, status=503)
    metadata_server.requests.clear()
    result = generate(RHGEN_RETRIES="2")
    assert result.returncode == 1
    assert "HTTP 503 after 3 tries" in result.stderr
    assert len(metadata_server.requests_to(CONTAINERS)) == 3
    assert target.snapshot() == live


def test_missing_service_metadata_means_no_aliases_and_stacks_still_route(metadata_server, generate, target, run_rhgen):
    metadata_server.set(APP1)  # self/service/metadata stays unset: 404 with Rancher's JSON error body

    result = generate()

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert map_entries(target) == {"app1.dev.tld": "app1"}
    assert metadata_server.requests_to(SERVICE_METADATA)
    routes = json.loads(run_rhgen(["routes", "--json"], target.env).stdout)
    assert [r["host"] for r in routes["routes"]] == ["app1.dev.tld"]
    assert routes["skipped"] == []


def test_metadata_requests_ask_for_json(metadata_server, generate):
    metadata_server.set(APP1)
    assert generate().returncode == 0
    assert {r.path for r in metadata_server.requests} == {CONTAINERS, SERVICE_METADATA}
    assert all(r.headers.get("Accept") == "application/json" for r in metadata_server.requests)


# --- what gets skipped ---------------------------------------------------------------------------


BAD_PORTS = ["80a", "0", "70000", "", " 80\n", "-80", "8080/tcp", "८०", "65536", "1e3"]


def test_containers_with_bad_port_labels_are_skipped_alone_with_a_warning_each(metadata_server, generate, target):
    bad = [container("app1", "web", f"127.0.1.{i}", value, name=f"app1-bad-{i}") for i, value in enumerate(BAD_PORTS)]
    metadata_server.set(APP1[:1] + bad + APP1[1:] + APP2)

    result = generate()

    assert result.returncode == 0, result.stderr
    assert sorted(warning_lines(result)) == sorted(
        f"rhgen: warning: container 'app1-bad-{i}': label {LABEL}={value!r} is not a port (1-65535); skipped"
        for i, value in enumerate(BAD_PORTS)
    )
    assert map_entries(target) == {"app1.dev.tld": "app1", "app2.dev.tld": "app2"}
    assert [line.split()[2] for line in server_lines(target)] == ["127.0.0.11:8080", "127.0.0.12:8080", "127.0.0.13:9000"]
    assert result.stdout.startswith("2 hosts → 2 backends, 3 servers; changed:")


BAD_PROXY_VALUES = ["send-proxy-v3", "send-proxy check", "yes", "", "SEND-PROXY"]


def test_containers_with_bad_proxy_labels_are_skipped_with_a_warning_each(metadata_server, generate, target):
    bad = [
        container("app2", "web", f"127.0.1.{i}", 9000, labels={PROXY_LABEL: value}, name=f"app2-bad-{i}")
        for i, value in enumerate(BAD_PROXY_VALUES)
    ]
    good = container("app2", "web", "127.0.0.14", 9000, labels={PROXY_LABEL: "send-proxy-v2"}, name="app2-web-v2")
    metadata_server.set(APP1 + APP2 + bad + [good])

    result = generate()

    assert result.returncode == 0, result.stderr
    expected = [
        f"rhgen: warning: container 'app2-bad-{i}': label {PROXY_LABEL}={value!r} is not one of "
        "send-proxy, send-proxy-v2, send-proxy-v2-ssl, send-proxy-v2-ssl-cn; skipped"
        for i, value in enumerate(BAD_PROXY_VALUES)
    ]
    assert sorted(warning_lines(result)) == sorted(expected)
    assert [line.replace(" check inter 1000 fall 2 rise 2", "").split()[2:] for line in server_lines(target)] == [
        ["127.0.0.11:8080"], ["127.0.0.12:8080"], ["127.0.0.13:9000"], ["127.0.0.14:9000", "send-proxy-v2"],
    ]


BAD_STACKS = ["_app", "-app", "app-", "app.two", "app 3", "a" * 64, "ünï"]


def test_stacks_whose_names_are_no_dns_label_are_skipped_with_a_warning_each(metadata_server, generate, target):
    odd = [container(stack, "web", f"127.0.1.{i}", 8080, name=f"odd-{i}") for i, stack in enumerate(BAD_STACKS)]
    metadata_server.set(APP1 + odd)

    result = generate()

    assert result.returncode == 0, result.stderr
    assert sorted(warning_lines(result)) == sorted(
        f"rhgen: warning: container 'odd-{i}': stack {stack!r} is not a valid DNS label; skipped"
        for i, stack in enumerate(BAD_STACKS)
    )
    assert map_entries(target) == {"app1.dev.tld": "app1"}
    assert "127.0.1." not in target.backends.read_text()


def test_compose_project_with_underscore_routes_with_a_dash(metadata_server, generate, target):
    """Issue 17: Compose project names may hold `_` (rt_proj); a host label cannot, so `_` becomes `-`."""
    metadata_server.set(APP1 + [container("rt_proj", "web", "127.0.0.14", 8080, name="rt_proj-web-1")])
    metadata_server.set(metadata={"aliases": {"rt_proj": ["shop"]}})

    result = generate()

    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == []
    assert map_entries(target) == {"app1.dev.tld": "app1", "rt-proj.dev.tld": "rt-proj", "shop.dev.tld": "rt-proj"}
    assert "# stack rt_proj\nbackend rt-proj\n" in target.backends.read_text()


def test_project_names_that_differ_only_by_underscore_follow_the_collision_rule(metadata_server, generate, target):
    metadata_server.set(APP1 + [container("rt_proj", "web", "127.0.0.14", 8080, name="first")])
    assert generate().returncode == 0
    metadata_server.set(
        APP1 + [container("rt_proj", "web", "127.0.0.14", 8080, name="first"), container("rt-proj", "web", "127.0.0.15", 8080, name="second")]
    )

    result = generate()

    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == [
        "rhgen: warning: container 'second': stack 'rt-proj' has the same host name as stack 'rt_proj', which serves it now; skipped"
    ]
    assert map_entries(target)["rt-proj.dev.tld"] == "rt-proj"
    assert "127.0.0.15" not in target.backends.read_text()


def test_new_stack_differing_in_case_cannot_take_over_a_served_host(metadata_server, generate, target):
    """Issue 17: a new stack APP1 took app1.dev.tld and its aliases; app1's own containers were skipped."""
    metadata_server.set(APP1)
    metadata_server.set(metadata={"aliases": {"app1": ["www"]}})
    assert generate().returncode == 0
    served = target.backends.read_text()
    metadata_server.set([container("APP1", "web", "127.0.0.66", 8080, name="impostor"), *APP1])

    result = generate()

    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == [
        "rhgen: warning: container 'impostor': stack 'APP1' has the same host name as stack 'app1', which serves it now; skipped"
    ]
    assert target.backends.read_text() == served
    assert map_entries(target) == {"app1.dev.tld": "app1", "www.dev.tld": "app1"}
    assert generate().stdout.strip().endswith("no change")  # the same inputs and live files: the same result


def test_container_with_a_copied_uuid_cannot_replace_a_served_server(metadata_server, generate, target):
    metadata_server.set(APP1)
    assert generate().returncode == 0
    real = APP1[0]
    impostor = container("app1", "web", "127.0.0.66", 8080, name="aaa-impostor", uuid=real["uuid"])
    metadata_server.set([impostor, *APP1])

    result = generate()

    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == [
        f"rhgen: warning: container 'aaa-impostor': server name web-{real['uuid']} is also claimed by container "
        "'app1-web-1', which serves it now; skipped"
    ]
    assert "127.0.0.66" not in target.backends.read_text()
    assert server_lines(target) == [f"server web-{c['uuid']} {c['primary_ip']}:8080 check inter 1000 fall 2 rise 2" for c in sorted(APP1, key=lambda c: c["uuid"])]


def test_container_ip_cannot_inject_lines_into_the_config(metadata_server, generate, target):
    evil = container("app2", "web", "127.0.0.13", 9000, name="evil")
    evil["primary_ip"] = "fe80::1%x]:1\nbackend injected\n    server s 127.0.0.99:80\n#"
    metadata_server.set(APP1 + [evil])

    result = generate()

    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == [f"rhgen: warning: container 'evil': primary_ip {evil['primary_ip']!r} is not an IP address; skipped"]
    for path in target.outputs:
        assert "injected" not in path.read_text() and "127.0.0.99" not in path.read_text()


def test_ipv6_container_address_passes_haproxy_check(metadata_server, generate, target):
    metadata_server.set(APP1 + [container("app6", "web", "fd00::6", 8080, name="v6")])
    result = generate()
    assert result.returncode == 0, result.stderr
    assert any(line.split()[2] == "[fd00::6]:8080" for line in server_lines(target))


# --- dry run -----------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_prints_a_diff_of_new_files(metadata_server, generate, target):
    metadata_server.set(APP1)

    result = generate("--dry-run")

    assert result.returncode == 0, result.stderr
    assert list(target.folder.iterdir()) == []
    assert f"--- /dev/null\n+++ {target.map}\n" in result.stdout
    assert "+app1.dev.tld app1\n" in result.stdout
    assert f"+    bind 127.0.0.1:{target.port}\n" in result.stdout
    assert result.stdout.endswith(
        "1 hosts → 1 backends, 2 servers; would change: backends.cfg, domain.map, haproxy.cfg\n"
    )


def test_dry_run_shows_what_would_change_in_live_files_and_leaves_them(live, metadata_server, generate, target):
    metadata_server.set(APP1[:1] + APP2)

    result = generate("--dry-run")

    assert result.returncode == 0, result.stderr
    assert target.snapshot() == live
    diff = result.stdout
    assert f"--- {target.map}\n+++ {target.map}\n" in diff
    assert "+app2.dev.tld app2\n" in diff
    assert "-    server web-" in diff and "127.0.0.12:8080" in diff
    assert f"--- {target.config}" not in diff  # haproxy.cfg itself does not change
    assert diff.endswith("would change: backends.cfg, domain.map\n")


def test_dry_run_without_changes_prints_no_diff(live, generate, target):
    result = generate("--dry-run")
    assert result.returncode == 0
    assert result.stdout == "2 hosts → 1 backends, 2 servers; no change\n"
    assert target.snapshot() == live


# --- haproxy -c ----------------------------------------------------------------------------------


def test_config_haproxy_rejects_is_reported_and_not_installed(live, metadata_server, generate, target, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    bundled = (resources.template_dir() / "haproxy.cfg.j2").read_text()
    (templates / "haproxy.cfg.j2").write_text(bundled.replace("    option forwardfor\n", "    option forwardfor\n    bogus-keyword 1\n"))
    metadata_server.set(APP1 + APP2)
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    result = generate(RHGEN_TEMPLATE_DIR=str(templates), TMPDIR=str(scratch))

    assert result.returncode == 1
    assert result.stderr.startswith("rhgen: error: haproxy -c rejected the new configuration:\n")
    assert "[ALERT]" in result.stderr and "bogus-keyword" in result.stderr
    assert str(tmp_path) not in result.stderr  # staged paths are shown as <new config>
    assert "<new config>" in result.stderr
    assert target.snapshot() == live
    assert list(scratch.iterdir()) == []  # the staged set is cleaned up


def test_missing_haproxy_binary_is_an_error_and_nothing_changes(live, metadata_server, generate, target, tmp_path):
    metadata_server.set(APP1 + APP2)
    result = generate(HAPROXY_BIN=str(tmp_path / "no-haproxy"))
    assert result.returncode == 1
    assert error_lines(result) == [f"rhgen: error: haproxy binary '{tmp_path / 'no-haproxy'}' not found (install haproxy or set HAPROXY_BIN)"]
    assert target.snapshot() == live


# --- never blank a proxy in service ---------------------------------------------------------------


def test_empty_result_does_not_replace_routes_in_service(live, metadata_server, generate, target):
    metadata_server.set([])

    result = generate()

    assert result.returncode == 1
    [line] = error_lines(result)
    assert "routes no host" in line and "--allow-empty" in line and f"{target.map} routes 2" in line
    assert target.snapshot() == live


def test_allow_empty_replaces_routes_with_none(live, metadata_server, generate, target):
    metadata_server.set([])

    result = generate("--allow-empty")

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("0 hosts → 0 backends, 0 servers; changed:")
    assert map_entries(target) == {}
    assert server_lines(target) == []


def test_empty_result_is_fine_on_first_run(metadata_server, generate, target):
    result = generate()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "0 hosts → 0 backends, 0 servers; changed: backends.cfg, domain.map, haproxy.cfg\n"


# --- swap and reload --------------------------------------------------------------------------------


def test_reload_command_runs_after_the_swap_and_not_without_change(metadata_server, generate, target, tmp_path):
    marker = tmp_path / "reloads"
    reload = script(tmp_path / "reload", f'echo "reload $*" >> {marker}\ncat {target.map} >> {marker}\n')
    env = {"RELOAD_COMMAND": f"{reload} --graceful"}
    metadata_server.set(APP1)

    first = generate(**env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith("; reloaded\n")
    assert marker.read_text().count("reload --graceful\n") == 1
    assert "app1.dev.tld app1" in marker.read_text()  # the reload saw the new map

    unchanged = generate(**env)
    assert unchanged.stdout.endswith("; no change\n")
    assert marker.read_text().count("reload --graceful\n") == 1

    metadata_server.set(APP1 + APP2)
    assert generate(**env).returncode == 0
    assert marker.read_text().count("reload --graceful\n") == 2
    assert marker.read_text().endswith("app2.dev.tld app2\n")


def test_failing_reload_command_is_reported_after_the_swap(metadata_server, generate, target, tmp_path):
    reload = script(tmp_path / "reload", 'echo "master socket gone" >&2\nexit 3\n')
    metadata_server.set(APP1)

    result = generate(RELOAD_COMMAND=str(reload))

    assert result.returncode == 1
    assert error_lines(result) == ["rhgen: error: files swapped, but RELOAD_COMMAND exited 3: master socket gone"]
    assert map_entries(target) == {"app1.dev.tld": "app1"}


def test_replaced_file_keeps_its_mode_and_new_files_get_0644(live, metadata_server, generate, target):
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o644 for path in target.outputs)
    target.map.chmod(0o640)
    target.backends.chmod(0o600)
    inode = target.map.stat().st_ino
    metadata_server.set(APP1 + APP2)

    assert generate().returncode == 0

    assert "app2.dev.tld app2" in target.map.read_text()
    assert target.map.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert stat.S_IMODE(target.map.stat().st_mode) == 0o640
    assert stat.S_IMODE(target.backends.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.config.stat().st_mode) == 0o644
    assert [p.name for p in target.folder.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left


def test_container_order_does_not_change_the_output(metadata_server, generate, target):
    containers = APP1 + APP2 + [
        container("app3", "api", "127.0.0.15", 7000, name="app3-api-1"),
        container("app3", "web", "127.0.0.16", 7001, name="app3-web-1"),
        container("App4", "web", "127.0.0.17", 7002, labels={PROXY_LABEL: "send-proxy-v2"}, name="app4-web-1"),
        container("app5", "web", "127.0.0.18", 7003, state="stopped", name="app5-web-1"),
    ]
    aliases = {"app3": ["api", "shop.example.com"], "app1": ["www", "b", "a"], "App4": "four"}
    metadata_server.set(containers)
    metadata_server.set(metadata={"aliases": aliases})
    assert generate().returncode == 0
    first = {path.name: path.read_bytes() for path in target.outputs}

    shuffler = random.Random(1234)
    for _ in range(3):
        shuffled = containers[:]
        shuffler.shuffle(shuffled)
        names = list(aliases.items())
        shuffler.shuffle(names)
        metadata_server.set(shuffled)
        metadata_server.set(metadata=
            {"aliases": {stack: sorted(v, key=lambda _: shuffler.random()) if isinstance(v, list) else v for stack, v in names}}
        )
        result = generate()
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith("; no change\n")
        assert {path.name: path.read_bytes() for path in target.outputs} == first


def test_missing_target_folder_is_a_clear_error(metadata_server, generate, target, tmp_path):
    metadata_server.set(APP1)
    gone = tmp_path / "gone"

    result = generate(HAPROXY_CONFIG=str(gone / "haproxy.cfg"))

    assert result.returncode == 1
    assert error_lines(result) == [f"rhgen: error: {gone / 'haproxy.cfg'}: folder {gone} does not exist"]
    assert not gone.exists()
    assert list(target.folder.iterdir()) == []


def test_bundled_demo_renders_the_documented_routes(run_rhgen, tmp_path):
    demo = Path(__file__).resolve().parents[1] / "demo"
    shutil.copytree(demo, tmp_path / "demo", ignore=shutil.ignore_patterns("out"))
    (tmp_path / "demo" / "out").mkdir()

    result = run_rhgen(["generate", "--config", "demo/rhgen.yml"], {})

    assert result.returncode == 0, result.stderr
    assert result.stdout == "5 hosts → 3 backends, 4 servers; changed: backends.cfg, domain.map, haproxy.cfg\n"
    out = tmp_path / "demo" / "out"
    assert (out / "domain.map").read_text().splitlines()[2:] == [
        "app-r124.dev.tld app-r124",
        "app-r126.dev.tld app-r126",
        "app1.dev.tld app1",
        "someotheralias.dev.tld app1",
        "www.dev.tld app1",
    ]
    assert "127.0.0.21:8081 check inter 1000 fall 2 rise 2 send-proxy\n" in (out / "backends.cfg").read_text()


# --- a user's own haproxy.cfg -------------------------------------------------------------------


def test_a_users_own_haproxy_cfg_is_never_overwritten_and_routes_through_the_generated_map(
    metadata_server, backend_servers, generate, target, haproxy
):
    ports = {ip: backend_servers.start(ip, name).port for ip, name in (("127.0.0.11", "app1"), ("127.0.0.13", "app2"))}
    own = seed_style_config(target)
    target.config.write_bytes(own)  # before the first run: domain.map does not exist yet
    target.config.chmod(0o640)
    metadata_server.set([container("app1", "web", "127.0.0.11", ports["127.0.0.11"], name="app1-web-1")])

    first = generate()

    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert first.stdout.endswith("changed: backends.cfg, domain.map\n")
    assert target.config.read_bytes() == own and target.config.stat().st_mode & 0o777 == 0o640
    haproxy.start()
    assert haproxy.get("app1.dev.tld") == (200, "app1")
    assert haproxy.get("nobody.dev.tld") == (503, "nobody-here")

    metadata_server.set([
        container("app1", "web", "127.0.0.11", ports["127.0.0.11"], name="app1-web-1"),
        container("app2", "web", "127.0.0.13", ports["127.0.0.13"], name="app2-web-1"),
    ])
    again = generate(HTTP_PORT=str(free_port()))  # a setting only rhgen's own haproxy.cfg would use
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert target.config.read_bytes() == own
    assert map_entries(target) == {"app1.dev.tld": "app1", "app2.dev.tld": "app2"}
    assert generate().stdout.endswith("no change\n")


@pytest.mark.parametrize(
    "use_map, fallback, missing",
    [
        (False, True, "does not use the map {map}"),
        (True, False, "declares no fallback backend (fallback)"),
        (False, False, "does not use the map {map} and declares no fallback backend "
                       "(none named by default_backend or the map lookup)"),
    ],
)
def test_a_users_own_haproxy_cfg_without_the_map_or_the_fallback_gets_one_warning(
    use_map, fallback, missing, metadata_server, generate, target
):
    own = seed_style_config(target, use_map, fallback)
    if not fallback:  # haproxy -c refuses a default_backend that does not exist: name one in backends.cfg's place
        own = own.replace(b"    default_backend fallback\n", b"")
    target.config.write_bytes(own)
    metadata_server.set(APP1)

    result = generate()

    assert result.returncode == 0, result.stderr
    assert warning_lines(result) == [
        f"rhgen: warning: {target.config} is your own (no rhgen header), so rhgen leaves it alone, "
        f"but it {missing.format(map=target.map)}: unknown hosts may get no answer"
    ]
    assert target.config.read_bytes() == own


def test_a_users_own_haproxy_cfg_is_checked_with_the_new_files_and_a_rejected_set_changes_nothing(
    metadata_server, generate, target
):
    own = seed_style_config(target)
    target.config.write_bytes(own + b"    server broken 127.0.0.1:notaport\n")
    metadata_server.set(APP1)

    result = generate()

    assert result.returncode == 1
    assert error_lines(result) == ["rhgen: error: haproxy -c rejected the new configuration:"]
    assert "notaport" in result.stderr
    assert not target.map.exists() and not target.backends.exists()


# --- two configurations, one folder ----------------------------------------------------------------


def test_two_configurations_writing_one_folder_in_turn_get_a_warning(live, metadata_server, generate, target):
    first_change = generate(STACK_DOMAIN="other.tld")  # once: a change of settings, not yet a tug of war
    assert first_change.returncode == 0 and warning_lines(first_change) == [], first_change.stderr

    back = generate()
    again = generate(STACK_DOMAIN="other.tld")

    expected = [
        f"rhgen: warning: {target.folder}: two rhgen configurations with different settings write this folder in turn "
        "(the last run used other settings, the one before these): each run replaces the other's files and reloads"
    ]
    assert back.returncode == 0 and warning_lines(back) == expected, back.stderr
    assert again.returncode == 0 and warning_lines(again) == expected, again.stderr
    settled = generate(STACK_DOMAIN="other.tld")
    assert settled.stdout.endswith("no change\n") and warning_lines(settled) == []


def test_a_custom_haproxy_cfg_template_without_the_header_still_renders_a_file_rhgen_replaces(
    metadata_server, generate, target, tmp_path
):
    templates = tmp_path / "templates"
    templates.mkdir()
    bundled = (resources.template_dir() / "haproxy.cfg.j2").read_text()
    headless = bundled.split("\n", 1)[1]  # the user dropped the "Generated by rhgen" line
    (templates / "haproxy.cfg.j2").write_text(headless)
    metadata_server.set(APP1)

    assert generate(RHGEN_TEMPLATE_DIR=str(templates)).returncode == 0
    assert target.config.read_text().startswith("# Generated by rhgen from haproxy.cfg.j2 (RHGEN_TEMPLATE_DIR)\n")
    (templates / "haproxy.cfg.j2").write_text(headless.replace("timeout client 30s", "timeout client 31s"))
    result = generate(RHGEN_TEMPLATE_DIR=str(templates))
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "timeout client 31s" in target.config.read_text()  # still rhgen's file: replaced


# --- one rendering for the live and the staged set -----------------------------------------------


def _rendered(tmp_path: Path, template_dir: str = "") -> tuple[dict[str, bytes], dict[str, bytes]]:
    from rhgen import render
    from rhgen.merge import load_settings
    from rhgen.routing import build_routing
    from rhgen.sources.answers import source_data

    settings = load_settings(None, {
        "STACK_DOMAIN": "dev.tld", "HAPROXY_CONFIG": str(tmp_path / "haproxy.cfg"),
        "HAPROXY_BACKEND_CONFIG": str(tmp_path / "backends.cfg"), "HAPROXY_DOMAIN_MAP": str(tmp_path / "domain.map"),
        "RHGEN_TEMPLATE_DIR": template_dir,
    }, {})
    containers = [*APP1, *APP2]
    routing = build_routing(source_data(containers, {"aliases": {"app1": ["www"]}}, "test"), "dev.tld", LABEL)
    staged_paths = {role: f"/staged/{role}" for role in ("config", "backends", "map")}
    live, staged = render.render_live_and_staged(settings, routing, None, staged_paths)
    return {f.role: f.content for f in live}, {f.role: f.content for f in staged}


def test_the_staged_set_refers_to_the_staged_files_and_is_otherwise_the_live_set(tmp_path):
    live, staged = _rendered(tmp_path)
    assert str(tmp_path / "domain.map").encode() in live["config"]
    assert b"/staged/map" in staged["config"] and str(tmp_path / "domain.map").encode() not in staged["config"]
    back = staged["config"]
    for role, name in (("config", "haproxy.cfg"), ("backends", "backends.cfg"), ("map", "domain.map")):
        back = back.replace(f"/staged/{role}".encode(), str(tmp_path / name).encode())
    assert back == live["config"]
    assert staged["backends"] == live["backends"] and staged["map"] == live["map"]


def test_a_custom_template_that_names_a_path_is_rendered_for_the_staged_set_too(tmp_path):
    own = tmp_path / "templates"
    own.mkdir()
    bundled = (resources.template_dir() / "backends.cfg.j2").read_text()
    (own / "backends.cfg.j2").write_text("# map: {{ paths.map }}\n" + bundled)
    live, staged = _rendered(tmp_path, str(own))
    assert f"# map: {tmp_path / 'domain.map'}\n".encode() in live["backends"]
    assert b"# map: /staged/map\n" in staged["backends"]
