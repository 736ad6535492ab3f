"""What a validator daemon loads: not torch, numpy or scipy (issue 10's idle-RSS goal).

The crew scheduler needs numpy and scipy; imported at module level by the market's crew
rules, it put about 50 MB on every daemon's RSS (106 -> 158 MB idle) although only a
block that places a crew runs it. These modules are what `polnet node run` imports for a
node that does no compute; a fresh interpreter shows what they pull in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

VALIDATOR_MODULES = ("cli.main", "node.daemon.app", "node.daemon.links", "node.daemon.crews",
                     "protocol.market.node", "protocol.market.crews")
HEAVY = ("torch", "numpy", "scipy", "networkx")


@pytest.mark.parametrize("module", VALIDATOR_MODULES)
def test_a_validator_daemons_modules_load_no_torch_numpy_or_scipy(module: str) -> None:
    code = f"import sys, json; import {module}; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120)
    assert json.loads(out.stdout) == [], f"{module} loads {out.stdout.strip()}"
