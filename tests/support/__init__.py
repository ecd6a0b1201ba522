"""What tests and benchmarks are built from, written once: see CONTRIBUTING.md ("Test support").
Fixtures over these live in tests/conftest.py; bench/ imports them as tests.support.*."""
