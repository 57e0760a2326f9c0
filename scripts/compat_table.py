"""Prints, for the LiteLLM installed beside it, each fast_litellm component: on, or off and
why (scripts/compat.sh). Exits 1 when a component that should be on is off."""

import logging
import sys

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
import fast_litellm  # noqa: E402

status = fast_litellm.status()
version = status.pop("litellm")
range_note = "inside" if version["tested"] else "OUTSIDE"
print(f"\nLiteLLM {version['litellm']} ({range_note} the tested range {version['tested_range']})\n")
print(f"{'component':22} {'state':6} why")
off = []
for name, s in status.items():
    print(f"{name:22} {s['state']:6} {s['reason']}")
    if s["state"] != "on" and name != "routing":
        off.append(name)
sys.exit(1 if off else 0)
