"""What `sh demo/run.sh` shows a newcomer: the bundled demo renders, and haproxy itself accepts the result."""

import shutil
import subprocess
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "demo"


def test_demo_renders_a_config_haproxy_accepts(run_rhgen, tmp_path):
    shutil.copytree(DEMO, tmp_path / "demo", ignore=shutil.ignore_patterns("out"))
    out = tmp_path / "demo" / "out"
    out.mkdir()

    result = run_rhgen(["generate", "--config", "demo/rhgen.yml"], {})

    assert result.returncode == 0, result.stderr
    # haproxy's own verdict, independent of the check rhgen ran before its swap.
    check = subprocess.run(
        [shutil.which("haproxy") or "/usr/sbin/haproxy", "-c", "-f", str(out / "haproxy.cfg"), "-f", str(out / "backends.cfg")],
        capture_output=True, text=True, timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "app1.dev.tld app1" in (out / "domain.map").read_text()


def test_every_command_is_listed_and_runs_its_help(run_rhgen):
    # The container's commands are imported by name only when asked for (rhgen/cli.py): a command added
    # to container_commands.COMMANDS but not named there would be unreachable.
    from rhgen.container_commands import COMMANDS

    listed = run_rhgen(["--help"], {"COLUMNS": "200"})
    assert listed.returncode == 0, listed.stderr
    for name in [command.name for command in COMMANDS] + ["generate", "watch", "routes", "certs"]:
        assert f"\n  {name} " in listed.stdout, name
        shown = run_rhgen([name, "--help"], {})
        assert shown.returncode == 0 and f"rhgen {name} [OPTIONS]" in shown.stdout.replace("python -m rhgen", "rhgen"), name
    unknown = run_rhgen(["no-such-command"], {})
    assert unknown.returncode == 2 and "No such command" in unknown.stderr
