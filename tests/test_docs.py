"""The README is the user's manual: it must name every setting and the two commands CI runs."""

from pathlib import Path

from rhgen.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in readme]
    assert missing == []


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = ".venv/bin/pytest"
    assert f"{test_command}   # runs the tests" in readme
    assert ci.rstrip().splitlines()[-1] == test_command
