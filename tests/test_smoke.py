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
