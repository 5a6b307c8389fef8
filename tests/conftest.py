"""Test-wide settings. Ray must stay on loopback and must never touch another user's cluster."""

import os

# Must be set before any Ray node starts: otherwise Ray replaces 127.0.0.1 with the host's address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# A stray RAY_ADDRESS would make ray.init() join someone else's cluster.
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
