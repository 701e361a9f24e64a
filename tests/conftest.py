"""Test-session settings."""

import os

# OpenMP threads that busy-wait make torch several times slower on small shared machines; set
# before torch is imported by any test module (the CLI and the Makefile do the same).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
