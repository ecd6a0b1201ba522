"""The files around the runtime, read the way their tools read them: crontab (supercronic's
rules), the schedule the entrypoint derives from it, the shell scripts (shellcheck), the
Dockerfile (hadolint, the pinned supercronic) and the compose examples."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.metadata import container, write_metadata_file
from tests.support.net import wait_for
from tests.support.rhgen import ENTRYPOINT, REPO, VENV_BIN, entrypoint_env
from rhgen.settings import SETTINGS, load_settings

# --- crontab, as supercronic parses it -----------------------------------------------------------

_MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
_DAYS = "SUN MON TUE WED THU FRI SAT".split()
# (name, lowest, highest, names, extra characters) in cronexpr's order with seconds and years
_FIELDS = {
    "seconds": (0, 59, [], ""),
    "minutes": (0, 59, [], ""),
    "hours": (0, 23, [], ""),
    "day-of-month": (1, 31, [], "?LW"),
    "month": (1, 12, _MONTHS, ""),
    "day-of-week": (0, 7, _DAYS, "?L#"),
    "years": (1970, 2099, [], ""),
}
_LAYOUTS = {  # supercronic tries 7, then 6, then 5 fields: the first that parses wins
    7: ["seconds", "minutes", "hours", "day-of-month", "month", "day-of-week", "years"],
    6: ["minutes", "hours", "day-of-month", "month", "day-of-week", "years"],
    5: ["minutes", "hours", "day-of-month", "month", "day-of-week"],
}


def _value(text: str, field: str) -> bool:
    low, high, names, _ = _FIELDS[field]
    if text.upper() in names:
        return True
    return text.isdigit() and low <= int(text) <= high


def valid_field(text: str, field: str) -> bool:
    """One cron field: a list of `*`, values, ranges, each with an optional /step (and L W ? #)."""
    extra = _FIELDS[field][3]
    for item in text.split(","):
        base, _, step = item.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            return False
        if base in ("*",) or (base == "?" and "?" in extra):
            continue
        if "L" in extra and re.fullmatch(r"[0-9]*L|LW", base):
            continue
        if "W" in extra and re.fullmatch(r"[0-9]+W", base):
            continue
        if "#" in extra and re.fullmatch(r"[0-7]#[1-5]", base):
            continue
        low, _, high = base.partition("-")
        if not _value(low, field) or (high and not _value(high, field)):
            return False
    return True


def parse_job_line(line: str) -> tuple[dict[str, str], str]:
    words = line.split()
    for count, layout in _LAYOUTS.items():
        if len(words) > count and all(valid_field(w, f) for w, f in zip(words, layout)):
            return dict(zip(layout, words)), " ".join(words[count:])
    raise ValueError(f"bad crontab line: {line!r}")


def job_lines(text: str) -> list[str]:
    return [
        line.strip() for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^\s*[^\s=]+\s*=", line)
    ]


def test_crontab_runs_rhgen_generate_every_ten_seconds_as_supercronic_reads_it():
    lines = job_lines((REPO / "crontab").read_text())
    assert len(lines) == 1
    fields, command = parse_job_line(lines[0])
    assert len(fields) == 7, "a seconds step needs all seven fields; six are read as minutes ... years"
    assert fields["seconds"] == "*/10"
    assert all(value == "*" for name, value in fields.items() if name != "seconds")
    assert command == "rhgen generate"
    program = shutil.which(command.split()[0], path=str(VENV_BIN))
    assert program, "the crontab's command is installed with the package"
    assert subprocess.run([program, "generate", "--help"], capture_output=True, timeout=30).returncode == 0


def test_the_crontab_reader_tells_the_layouts_apart():
    assert parse_job_line("*/10 * * * * * * rhgen generate")[0]["seconds"] == "*/10"
    six = parse_job_line("*/10 * * * * * rhgen generate")[0]  # the classic slip: minutes, not seconds
    assert "seconds" not in six and six["minutes"] == "*/10"
    assert parse_job_line("*/5 * * * mon-fri rhgen generate")[1] == "rhgen generate"
    with pytest.raises(ValueError):
        parse_job_line("every ten seconds rhgen generate")


# --- the schedule as the entrypoint derives it (no supercronic: the plain loop) ------------------


@pytest.fixture
def file_env(tmp_path):
    metadata_file = tmp_path / "metadata.json"
    write_metadata_file(metadata_file, [container("app1", "web", "127.0.0.11", 8080, name="app1-web-1")])
    env = entrypoint_env(tmp_path, "/nonexistent", 8080, DISABLE_METADATA="true", METADATA_FILE=str(metadata_file))
    del env["RHGEN_SCHEDULE"]
    return env


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({}, "every 10 s"),  # the bundled crontab
        ({"RHGEN_SCHEDULE": "*/3 * * * * * *"}, "every 3 s"),
        ({"RHGEN_SCHEDULE": "*/2 * * * *"}, "every 120 s"),  # five fields: minutes
        ({"RHGEN_SCHEDULE": "*/5 * * * * *"}, "every 300 s"),  # six fields: minutes ... years
        ({"RHGEN_SCHEDULE": "15 3 * * * * *", "RHGEN_INTERVAL": "7"}, "every 7 s"),
    ],
)
def test_without_supercronic_the_loop_runs_with_the_schedules_period(procs, file_env, settings, said):
    proc = procs.spawn(["bash", str(ENTRYPOINT), "generate-maps"], {**file_env, **settings}, "sidekick")
    wait_for(lambda: "in a plain loop" in proc.log(), 10, what="the schedule started")
    assert f"running 'rhgen generate' {said} in a plain loop" in proc.log()
    assert proc.log().count("in a plain loop") == 1
    assert proc.terminate_and_wait() == 0
    assert Path(file_env["HAPROXY_BACKEND_CONFIG"]).exists()  # the first run happened at once


@pytest.mark.parametrize(
    ("schedule", "said"),
    [
        ("15 3 * * * * *", "cannot derive a period from the schedule '15 3 * * * * *'; set RHGEN_INTERVAL"),
        ("every ten seconds", "RHGEN_SCHEDULE 'every ten seconds' is not a cron expression"),
    ],
)
def test_a_schedule_it_cannot_follow_stops_it_before_anything_runs(procs, file_env, schedule, said):
    proc = procs.spawn(["bash", str(ENTRYPOINT)], {**file_env, "RHGEN_SCHEDULE": schedule}, "entrypoint")
    assert proc.popen.wait(timeout=10) == 2
    assert said in proc.log()
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
