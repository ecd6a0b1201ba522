"""rhgen: keeps HAProxy routing in step with running containers."""

__version__ = "0.1.0"
