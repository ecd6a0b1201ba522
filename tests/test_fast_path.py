"""The common cron run changes nothing: it must stay cheap and still notice every real change."""

from __future__ import annotations

import functools

from tests.support.metadata import APP1, container
from tests.support.outputs import script


APP2 = [container("app2", "web", "127.0.0.13", 9000, name="app2-web-1")]


def test_no_change_run_imports_neither_jinja2_nor_cryptography_nor_requests(live, generate):
    # A one-shot run of the Rancher source asks on the standard library's http.client (plain_http.py):
    # requests and urllib3 are the watch's long poll only.
    result = generate(PYTHONPROFILEIMPORTTIME="1")
    assert result.returncode == 0 and "no change" in result.stdout
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "click" in imported and "http.client" in imported  # the import log is really there
    assert not {name for name in imported if name.split(".")[0] in ("jinja2", "cryptography", "requests", "urllib3")}


def test_a_hand_edited_file_is_restored_by_the_next_run(live, generate, target):
    target.backends.write_text(target.backends.read_text() + "\n# edited by hand\n")
    result = generate()
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("changed: backends.cfg\n")
    assert target.snapshot()["backends.cfg"][0] == live["backends.cfg"][0]


def test_a_lost_fingerprint_costs_one_full_run_and_rewrites_nothing_else(live, generate, target):
    (target.folder / ".rhgen.fingerprint").unlink()
    result = generate()
    assert result.returncode == 0 and "no change" in result.stdout
    after = target.snapshot()
    assert {name: after[name] for name in ("haproxy.cfg", "backends.cfg", "domain.map")} == {
        name: live[name] for name in ("haproxy.cfg", "backends.cfg", "domain.map")
    }
    assert after[".rhgen.fingerprint"][0] == live[".rhgen.fingerprint"][0]  # written again, same content


def test_a_changed_setting_that_renders_differently_is_not_skipped(live, generate, target):
    result = generate(HTTP_PORT=str(int(target.env["HTTP_PORT"]) + 1))
    assert result.returncode == 0
    assert result.stdout.endswith("changed: haproxy.cfg\n")


def test_a_changed_template_is_not_skipped(live, generate, target, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "domain.map.j2").write_text("# mine\n{% for r in routing.routes %}{{ r.host }} {{ r.backend }}\n{% endfor %}")
    result = generate(RHGEN_TEMPLATE_DIR=str(templates))
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("changed: domain.map\n")
    assert target.map.read_text().startswith("# mine\n")


def test_a_failed_reload_is_retried_by_the_next_run_even_without_change(live, metadata_server, generate, target, tmp_path):
    marker = tmp_path / "reloaded"
    metadata_server.set(APP1 + APP2)
    failed = generate(RELOAD_COMMAND=str(script(tmp_path / "fail", "exit 3\n")))
    assert failed.returncode == 1 and "files swapped, but RELOAD_COMMAND exited 3" in failed.stderr
    retried = generate(RELOAD_COMMAND=str(script(tmp_path / "ok", f"touch {marker}\n")))
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.endswith("no change; reloaded\n")
    assert marker.exists()
    marker.unlink()
    quiet = generate(RELOAD_COMMAND=str(tmp_path / "ok"))
    assert quiet.stdout.endswith("no change\n") and not marker.exists()


# --- the shorter cut: the same answer bytes as a run that found its files in service ---------------

BAD_PORT = container("app3", "web", "127.0.0.14", "80a", name="app3-web-1")


def armed(generate, target):
    """A run that finds its model in service records the answers it read (.rhgen.answers)."""
    result = generate()
    assert result.returncode == 0 and result.stdout.endswith("no change\n"), result.stderr
    assert (target.folder / ".rhgen.answers").exists()
    return result


def test_the_same_answers_again_are_not_decoded_and_their_warnings_are_said_again(live, metadata_server, generate, target):
    metadata_server.set(APP1 + [BAD_PORT])
    assert generate().returncode == 0
    decoded = armed(generate, target)
    assert "container 'app3-web-1': label map-public-http='80a' is not a port" in decoded.stderr
    again = generate()
    assert (again.stdout, again.stderr) == (decoded.stdout, decoded.stderr)
    # What the summary says comes from the record, not from a model: proof that none was made.
    remembered = target.folder / ".rhgen.answers"
    lines = remembered.read_text().split("\n")
    remembered.write_text("\n".join([*lines[:2], "7 8 9", *lines[3:]]))
    assert generate().stdout == "7 hosts → 8 backends, 9 servers; no change\n"


def test_the_same_answers_with_an_edited_template_are_rendered_again(live, generate, target, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    lines = "{% for r in routing.routes %}{{ r.host }} {{ r.backend }}\n{% endfor %}"
    (templates / "domain.map.j2").write_text("# mine\n" + lines)
    mine = functools.partial(generate, RHGEN_TEMPLATE_DIR=str(templates))
    assert mine().stdout.endswith("changed: domain.map\n")
    armed(mine, target)
    (templates / "domain.map.j2").write_text("# edited\n" + lines)
    result = mine()
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("changed: domain.map\n")
    assert target.map.read_text().startswith("# edited\n")


def test_the_same_answers_with_a_changed_setting_are_rendered_again(live, generate, target):
    armed(generate, target)
    result = generate(HTTP_PORT=str(int(target.env["HTTP_PORT"]) + 1))
    assert result.returncode == 0
    assert result.stdout.endswith("changed: haproxy.cfg\n")


def test_other_answer_bytes_that_make_the_same_model_change_nothing_and_do_not_reload(
    live, metadata_server, generate, target, tmp_path
):
    marker = tmp_path / "reloaded"
    reload = str(script(tmp_path / "reload", f"touch {marker}\n"))
    armed(generate, target)
    volatile = [{**item, "hostname": "moved", "create_index": 99} for item in APP1]  # fields rhgen does not read
    metadata_server.set(volatile, {"aliases": {"app1": ["www"]}})
    result = generate(RELOAD_COMMAND=reload)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("no change\n") and not marker.exists()
    assert generate(RELOAD_COMMAND=reload).stdout.endswith("no change\n") and not marker.exists()
