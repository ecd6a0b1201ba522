"""Test support shared by the tests and bench/: real daemons and images, set up once."""
