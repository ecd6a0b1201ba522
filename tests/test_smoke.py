import subprocess
import sys


def test_demo_renders_a_config_haproxy_accepts(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rhgen", "generate", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0
    assert "STACK_DOMAIN" in result.stdout
