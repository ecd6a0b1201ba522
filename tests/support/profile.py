"""How much the suite tries: RHGEN_HYPOTHESIS_PROFILE=quick (the default) or ci (what .ci/run sets);
RHGEN_KILL_RUNS overrides the number of kill -9 runs either profile makes."""

from __future__ import annotations

import os

PROFILE = os.environ.get("RHGEN_HYPOTHESIS_PROFILE", "quick")
if PROFILE not in ("quick", "ci"):
    raise SystemExit(f"RHGEN_HYPOTHESIS_PROFILE={PROFILE!r}: expected quick or ci")
KILL_RUNS = int(os.environ.get("RHGEN_KILL_RUNS", "200" if PROFILE == "ci" else "20"))
