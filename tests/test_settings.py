"""Settings as users give them: bundled defaults < --config YAML < environment < flags."""

from __future__ import annotations

import json
import re

import pytest
import trustme

from tests.support.metadata import CONTAINERS, LABEL, container
from rhgen.errors import SettingsError
from rhgen.merge import load_settings

# One container per layer, each carrying only "its" routing label: the hosts that route
# tell which layer's RANCHER_LABEL won.
LAYER_CONTAINERS = [
    container("fromdefaults", "web", "127.0.0.11", None, labels={LABEL: "8080"}),
    container("fromfile", "web", "127.0.0.12", None, labels={"label-file": "8080"}),
    container("fromenv", "web", "127.0.0.13", None, labels={"label-env": "8080"}),
    container("fromflag", "web", "127.0.0.14", None, labels={"label-flag": "8080"}),
]


def routed_hosts(result) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [route["host"] for route in json.loads(result.stdout)["routes"]]


def settings_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("rhgen: error: ")
    return lines[0]


@pytest.fixture
def env(metadata_server):
    """The least a `routes` run needs: a domain and the metadata server."""
    metadata_server.set(LAYER_CONTAINERS)
    return {"STACK_DOMAIN": "dev.tld", "RANCHER_API_HOST": metadata_server.host, "RHGEN_RETRIES": "0"}


@pytest.mark.parametrize(
    "layers, winner",
    [
        ((), "fromdefaults"),
        (("file",), "fromfile"),
        (("file", "env"), "fromenv"),
        (("file", "env", "flag"), "fromflag"),
        (("env", "flag"), "fromflag"),
        (("file", "flag"), "fromflag"),
    ],
)
def test_each_layer_overrides_the_ones_below(layers, winner, env, run_rhgen, tmp_path):
    args = ["routes", "--json"]
    if "file" in layers:
        (tmp_path / "rhgen.yml").write_text("rancher_label: label-file\n")
        args += ["--config", "rhgen.yml"]
    if "env" in layers:
        env["RANCHER_LABEL"] = "label-env"
    if "flag" in layers:
        args += ["--rancher-label", "label-flag"]

    assert routed_hosts(run_rhgen(args, env)) == [f"{winner}.dev.tld"]


def test_rhgen_config_names_the_settings_file_and_config_flag_beats_it(env, run_rhgen, tmp_path):
    (tmp_path / "from-env.yml").write_text("rancher_label: label-env\n")
    (tmp_path / "from-flag.yml").write_text("rancher_label: label-file\n")
    env["RHGEN_CONFIG"] = str(tmp_path / "from-env.yml")

    assert routed_hosts(run_rhgen(["routes", "--json"], env)) == ["fromenv.dev.tld"]
    assert routed_hosts(run_rhgen(["routes", "--json", "--config", "from-flag.yml"], env)) == ["fromfile.dev.tld"]


def test_layers_decide_the_rendered_bind_port(metadata_server, target, run_rhgen, tmp_path):
    (tmp_path / "rhgen.yml").write_text("http_port: 8001\nbind_address: 127.0.0.2\n")
    env = {**target.env, "HTTP_PORT": "8002"}
    del env["BIND_ADDRESS"]

    result = run_rhgen(["generate", "--config", "rhgen.yml", "--http-port", "8003"], env)

    assert result.returncode == 0, result.stderr
    assert "    bind 127.0.0.2:8003\n" in target.config.read_text()


@pytest.mark.parametrize("text", ["true", "TRUE", "True", "yes", "YES", "Yes", "1", "on", " true "])
def test_true_booleans_in_any_case(text):
    settings = load_settings(None, {"STACK_DOMAIN": "dev.tld", "DISABLE_METADATA": text, "METADATA_FILE": "m.json"})
    assert settings.disable_metadata is True


@pytest.mark.parametrize("text", ["false", "FALSE", "False", "no", "NO", "No", "0", "off", ""])
def test_false_booleans_in_any_case(text):
    settings = load_settings(None, {"STACK_DOMAIN": "dev.tld", "DISABLE_METADATA": text})
    assert settings.disable_metadata is False


@pytest.mark.parametrize("yaml_value", ["yes", "Yes", "true", "on", "1", "'YES'"])
def test_booleans_from_a_settings_file(yaml_value, tmp_path):
    (tmp_path / "rhgen.yml").write_text(f"enable_stats: {yaml_value}\n")
    assert load_settings(str(tmp_path / "rhgen.yml"), {"STACK_DOMAIN": "dev.tld"}).enable_stats is True


def test_boolean_switches_the_source_for_the_cli(env, run_rhgen, tmp_path):
    answers = {"containers": [container("fromfile", "web", "127.0.0.12", 8080)]}
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    env["METADATA_FILE"] = "answers.json"

    assert routed_hosts(run_rhgen(["routes", "--json"], {**env, "DISABLE_METADATA": "Yes"})) == ["fromfile.dev.tld"]
    assert routed_hosts(run_rhgen(["routes", "--json"], {**env, "DISABLE_METADATA": "NO"})) == ["fromdefaults.dev.tld"]


@pytest.mark.parametrize(
    "env_change, expected",
    [
        ({"HTTP_PORT": "70000"}, "setting HTTP_PORT (environment): '70000' is not a port (1-65535)"),
        ({"HTTP_PORT": "http"}, "setting HTTP_PORT (environment): 'http' is not a port"),
        ({"ENABLE_SSL": "maybe"}, "setting ENABLE_SSL (environment): 'maybe' is not a boolean"),
        ({"STACK_DOMAIN": None}, "setting STACK_DOMAIN is required"),
        ({"STACK_DOMAIN": ""}, "setting STACK_DOMAIN (environment): '' is required"),
        ({"STACK_DOMAIN": "dev_tld"}, "setting STACK_DOMAIN (environment): 'dev_tld' is not a valid domain name"),
        ({"SSL_REDIRECTION_TYPE": "305"}, "setting SSL_REDIRECTION_TYPE (environment): '305' is not a redirect status"),
        ({"RHGEN_READ_TIMEOUT": "0"}, "setting RHGEN_READ_TIMEOUT (environment): '0' must be more than 0"),
        ({"BIND_ADDRESS": "localhost"}, "setting BIND_ADDRESS (environment): 'localhost' is not an IP address"),
        ({"DISABLE_METADATA": "true"}, "setting METADATA_FILE is required when DISABLE_METADATA is true"),
        ({"HTTP_PORT": "1936", "ENABLE_STATS": "1"}, "settings HTTP_PORT and STATS_PORT both use port 1936"),
    ],
    ids=lambda value: ",".join(f"{k}={v}" if v is not None else f"no {k}" for k, v in value.items())
    if isinstance(value, dict) else "error",
)
def test_invalid_setting_exits_2_with_one_line_naming_it(env_change, expected, env, run_rhgen, metadata_server):
    for name, value in env_change.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value

    line = settings_error(run_rhgen(["generate"], env))

    assert expected in line
    assert metadata_server.requests == []  # nothing was fetched


def test_invalid_flag_value_names_the_setting_and_the_command_line(env, run_rhgen):
    line = settings_error(run_rhgen(["routes", "--http-port", "0"], env))
    assert "setting HTTP_PORT (command line): '0' is not a port" in line


def test_unknown_key_in_settings_file_is_named(env, run_rhgen, tmp_path):
    (tmp_path / "rhgen.yml").write_text("stack_domain: dev.tld\nhttp_prot: 8080\n")
    line = settings_error(run_rhgen(["generate", "--config", "rhgen.yml"], env))
    assert "rhgen.yml: unknown setting 'http_prot'" in line


def test_invalid_value_in_settings_file_names_setting_and_file(env, run_rhgen, tmp_path):
    (tmp_path / "rhgen.yml").write_text("ssl_redirection_type: 305\n")
    line = settings_error(run_rhgen(["generate", "--config", "rhgen.yml"], env))
    assert "setting SSL_REDIRECTION_TYPE (settings file rhgen.yml): 305 is not a redirect status" in line


@pytest.mark.parametrize("text, problem", [("a: [1\n", "is not valid YAML"), ("- 1\n", "expected a mapping")])
def test_settings_file_that_is_not_a_mapping_is_an_error(text, problem, env, run_rhgen, tmp_path):
    (tmp_path / "rhgen.yml").write_text(text)
    assert problem in settings_error(run_rhgen(["generate", "--config", "rhgen.yml"], env))


def test_missing_settings_file_is_an_error(env, run_rhgen):
    assert "settings file nope.yml: cannot read" in settings_error(run_rhgen(["generate", "--config", "nope.yml"], env))


@pytest.mark.parametrize("form", ["{host}", "http://{host}", "http://{host}/"])
def test_rancher_api_host_forms_reach_the_metadata_server(form, env, run_rhgen, metadata_server):
    env["RANCHER_API_HOST"] = form.format(host=metadata_server.host)

    assert routed_hosts(run_rhgen(["routes", "--json"], env)) == ["fromdefaults.dev.tld"]
    assert [r.path for r in metadata_server.requests] == [CONTAINERS, "/latest/self/service/metadata"]


def test_rancher_api_version_is_part_of_the_path(env, run_rhgen, metadata_server):
    metadata_server.answer_json("/2015-12-19/containers", [container("dated", "web", "127.0.0.11", 8080)])
    env["RANCHER_API_VERSION"] = "2015-12-19"
    assert routed_hosts(run_rhgen(["routes", "--json"], env)) == ["dated.dev.tld"]


def test_relative_paths_in_a_settings_file_are_relative_to_that_file(metadata_server, run_rhgen, tmp_path):
    conf = tmp_path / "conf"
    (conf / "out").mkdir(parents=True)
    (conf / "answers.json").write_text(json.dumps({"containers": [container("app1", "web", "127.0.0.11", 8080)]}))
    (conf / "rhgen.yml").write_text(
        "stack_domain: dev.tld\n"
        "bind_address: 127.0.0.1\n"
        "http_port: 8080\n"
        "disable_metadata: true\n"
        "metadata_file: answers.json\n"
        "haproxy_config: out/haproxy.cfg\n"
        "haproxy_backend_config: out/backends.cfg\n"
        "haproxy_domain_map: ./out/domain.map\n"
        "haproxy_ssl_cert: out/haproxy.pem\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = run_rhgen(["generate", "--config", "../conf/rhgen.yml"], {}, cwd=elsewhere)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (conf / "out").iterdir() if not p.name.startswith(".")) == [
        "backends.cfg", "domain.map", "haproxy.cfg",
    ]
    assert list(elsewhere.iterdir()) == []
    assert f"map_str({conf / 'out' / 'domain.map'},rhgen_fallback)" in (conf / "out" / "haproxy.cfg").read_text()
    assert "app1.dev.tld app1" in (conf / "out" / "domain.map").read_text()


def test_relative_paths_from_the_environment_are_relative_to_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {"STACK_DOMAIN": "dev.tld", "HAPROXY_DOMAIN_MAP": "out/domain.map"})
    assert settings.haproxy_domain_map == str(tmp_path / "out" / "domain.map")


def test_secret_setting_value_is_never_shown():
    with pytest.raises(SettingsError) as caught:
        load_settings(None, {"STACK_DOMAIN": "dev.tld", "STATS_PASSWORD": "s3cret with space"})
    assert "STATS_PASSWORD" in str(caught.value)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("literal", ["0x50", "0o120", "0120", "1_000", "1:20", "+0x50"])
def test_integer_settings_from_yaml_are_decimal_only(literal, tmp_path):
    """YAML 1.1 reads 0x50 as 80, 017 as 15, 1_000 as 1000 and 1:20 as 80: a port must be written as one."""
    (tmp_path / "rhgen.yml").write_text(f"http_port: {literal}\n")
    with pytest.raises(SettingsError, match=rf"setting HTTP_PORT \(settings file .*\): '{re.escape(literal)}' is not a port"):
        load_settings(str(tmp_path / "rhgen.yml"), {"STACK_DOMAIN": "dev.tld"})


@pytest.mark.parametrize("literal, value", [("8080", 8080), ("'8080'", 8080), ("\"8080\"", 8080)])
def test_decimal_integers_and_decimal_strings_from_yaml_are_read(literal, value, tmp_path):
    (tmp_path / "rhgen.yml").write_text(f"http_port: {literal}\nstats_password: 0x50\n")
    settings = load_settings(str(tmp_path / "rhgen.yml"), {"STACK_DOMAIN": "dev.tld"})
    assert settings.http_port == value
    assert settings.stats_password == "0x50"  # a text setting keeps what was written, not "80"


def test_crt_list_defaults_beside_the_seed_config_the_user_named(tmp_path):
    own = tmp_path / "own"
    settings = load_settings(None, {"STACK_DOMAIN": "dev.tld", "ENABLE_SSL": "true", "HAPROXY_CONFIG": str(own / "haproxy.cfg")})
    assert settings.haproxy_ssl_crt_list == str(own / "crt-list.txt")
    named = load_settings(None, {"STACK_DOMAIN": "dev.tld", "HAPROXY_SSL_CRT_LIST": str(tmp_path / "x.txt")})
    assert named.haproxy_ssl_crt_list == str(tmp_path / "x.txt")


def test_tls_seed_in_its_own_folder_generates_without_naming_the_crt_list(run_rhgen, tmp_path):
    """Issue 10: every seed path in one folder plus ENABLE_SSL failed on /usr/local/etc/haproxy/crt-list.txt."""
    own = tmp_path / "seed"
    own.mkdir()
    answers = {"containers": [container("app1", "web", "127.0.0.12", 8080)], "self_service_metadata": {}}
    (tmp_path / "answers.json").write_text(json.dumps(answers))
    env = {
        "STACK_DOMAIN": "dev.tld", "ENABLE_SSL": "true", "RHGEN_SOURCE": "file", "METADATA_FILE": "answers.json",
        "HTTP_PORT": "18080", "HTTPS_PORT": "18443", "BIND_ADDRESS": "127.0.0.1",
        **{var: str(own / name) for var, name in (
            ("HAPROXY_CONFIG", "haproxy.cfg"), ("HAPROXY_BACKEND_CONFIG", "backends.cfg"),
            ("HAPROXY_DOMAIN_MAP", "domain.map"), ("HAPROXY_SSL_CERT", "haproxy.pem"),
        )},
    }
    leaf = trustme.CA().issue_cert("app1.dev.tld")
    (own / "haproxy.pem").write_bytes(leaf.private_key_and_cert_chain_pem.bytes())  # a mounted PEM

    result = run_rhgen(["generate"], env)

    assert result.returncode == 0, result.stderr
    assert (own / "crt-list.txt").is_file()
    assert f"crt-list {own / 'crt-list.txt'}" in (own / "haproxy.cfg").read_text()
