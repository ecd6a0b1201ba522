"""The files around the runtime: the schedule of the entrypoint without supercronic, the shell
scripts (shellcheck), the Dockerfile (hadolint, and the pieces it must hold) and the compose examples."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.metadata import container, write_metadata_file
from tests.support.net import wait_for
from tests.support.rhgen import ENTRYPOINT, REPO, VENV_BIN, entrypoint_env
from rhgen.merge import load_settings
from rhgen.settings import SETTINGS

# --- the schedule without supercronic: `rhgen schedule`, every RHGEN_INTERVAL seconds ------------


@pytest.fixture
def file_env(tmp_path):
    metadata_file = tmp_path / "metadata.json"
    write_metadata_file(metadata_file, [container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")])
    env = entrypoint_env(tmp_path, "/nonexistent", 8080, DISABLE_METADATA="true", METADATA_FILE=str(metadata_file))
    del env["RHGEN_INTERVAL"]
    return env


@pytest.mark.parametrize(("settings", "said"), [({}, "every 10 s"), ({"RHGEN_INTERVAL": "3"}, "every 3 s")])
def test_without_supercronic_the_loop_runs_every_interval(procs, file_env, settings, said):
    proc = procs.spawn(["bash", str(ENTRYPOINT), "generate-maps"], {**file_env, **settings}, "sidekick")
    wait_for(lambda: "in a plain loop" in proc.log(), 10, what="the schedule started")
    assert f"running 'rhgen generate' {said} in a plain loop" in proc.log()
    assert proc.log().count("in a plain loop") == 1
    assert proc.terminate_and_wait() == 0
    assert Path(file_env["HAPROXY_BACKEND_CONFIG"]).exists()  # the first run happened at once


def test_the_interval_from_an_rhgen_config_file_reaches_the_loop(procs, file_env, tmp_path):
    config = tmp_path / "rhgen.yml"
    config.write_text("schedule_interval: 4\n")
    proc = procs.spawn(["bash", str(ENTRYPOINT), "generate-maps"], {**file_env, "RHGEN_CONFIG": str(config)}, "sidekick")
    wait_for(lambda: "in a plain loop" in proc.log(), 10, what="the schedule started")
    assert "running 'rhgen generate' every 4 s in a plain loop" in proc.log()
    assert proc.terminate_and_wait() == 0


@pytest.mark.parametrize("interval", ["0", "ten", "1.5"])
def test_an_interval_it_cannot_follow_stops_it_before_anything_runs(procs, file_env, interval):
    proc = procs.spawn(["bash", str(ENTRYPOINT)], {**file_env, "RHGEN_INTERVAL": interval}, "entrypoint")
    assert proc.popen.wait(timeout=10) == 2
    assert f"setting RHGEN_INTERVAL (environment): '{interval}'" in proc.log()
    assert not Path(file_env["HAPROXY_CONFIG"]).exists()
    assert procs.leftovers() == []


def test_other_arguments_run_as_a_command(file_env):
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "rhgen", "routes"], env=file_env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "app1.dev.tld  →  app1" in result.stdout
    result = subprocess.run(["bash", str(ENTRYPOINT), "sh", "-c", "exit 7"], env=file_env, timeout=30)
    assert result.returncode == 7


# --- shell scripts and the Dockerfile -------------------------------------------------------------


def test_shell_scripts_pass_shellcheck():
    result = subprocess.run(
        [str(VENV_BIN / "shellcheck"), "--severity=info", "entrypoint.sh", "rhgen-reload"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            pairs.append((keyword.upper(), " ".join(rest.split())))
    return pairs


def test_dockerfile_pins_supercronic_and_checks_its_sha256_before_making_it_executable():
    # The one property of the Dockerfile no test can observe in the built image: the test build
    # has no network to download supercronic from. Everything else the Dockerfile promises (haproxy
    # binding port 80 as uid 10001, rhgen in its virtualenv, the entrypoint dropping root, the
    # sidekick layout) tests/test_image.py checks by building and running the image.
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for keyword, rest in instructions if keyword == "ARG" and "=" in rest)
    runs = " && ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert re.fullmatch(r"v\d+\.\d+\.\d+", args["SUPERCRONIC_VERSION"])
    for arch in ("AMD64", "ARM64"):
        assert re.fullmatch(r"[0-9a-f]{64}", args[f"SUPERCRONIC_SHA256_{arch}"])
    assert "releases/download/${SUPERCRONIC_VERSION}/supercronic-linux-${TARGETARCH}" in runs
    assert runs.index("sha256sum -c") < runs.index("chmod 0755 /usr/local/bin/supercronic")


# --- compose examples -----------------------------------------------------------------------------

EXAMPLES = REPO / "examples"
KNOWN_ENV = {s.env for s in SETTINGS} | set(re.findall(r"\$\{((?:RHGEN|HAPROXY)_[A-Z_]+)", ENTRYPOINT.read_text()))


def compose(path: str) -> dict:
    return yaml.safe_load((EXAMPLES / path).read_text())


def resolved(environment: dict) -> dict[str, str]:
    """The environment as a container would see it, ${VARIABLES} filled in by the deployer."""
    return {key: re.sub(r"\$\{[A-Z0-9_]+\}", "filled-in", str(value)) for key, value in environment.items()}


@pytest.mark.parametrize("layout", ["single-container", "sidekick"])
def test_examples_use_known_settings_with_valid_values_and_carry_aliases_and_a_certificate(layout):
    services = compose(f"{layout}/docker-compose.yml")["services"]
    for service in services.values():
        environment = resolved(service.get("environment", {}))
        assert set(environment) <= KNOWN_ENV, set(environment) - KNOWN_ENV
        if "STACK_DOMAIN" in environment:
            load_settings(environ=environment)  # raises on any value rhgen would refuse
    metadata = compose(f"{layout}/rancher-compose.yml")["services"]["HTTP"]["metadata"]
    assert all(isinstance(names, list) and names for names in metadata["aliases"].values())
    assert metadata["ssl_cert"] and metadata["ssl_key"]


def test_single_container_example_generates_and_serves_in_one_container():
    services = compose("single-container/docker-compose.yml")["services"]
    assert list(services) == ["HTTP"]
    http = services["HTTP"]
    assert "command" not in http and "RHGEN_MODE" not in http["environment"]
    assert {"80:80", "443:443"} <= set(http["ports"])


def test_sidekick_example_shares_the_generated_files_with_the_haproxy_container():
    services = compose("sidekick/docker-compose.yml")["services"]
    primary = services["HTTP"]
    sidekick_name = primary["labels"]["io.rancher.sidekicks"]
    sidekick = services[sidekick_name]
    assert sidekick["command"] == "generate-maps"
    assert primary["environment"]["RHGEN_MODE"] == "haproxy-only"
    assert sidekick_name in primary["volumes_from"]
    assert "/usr/local/etc/haproxy" in sidekick["volumes"]  # the folder of the default paths
    assert "STACK_DOMAIN" in sidekick["environment"]


def test_app_stack_example_carries_the_routing_label():
    labels = compose("app-stack/docker-compose.yml")["services"]["web"]["labels"]
    assert labels["map-public-http"].isdigit()
