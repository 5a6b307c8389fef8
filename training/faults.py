"""Test-only failure injection (hidden flag ``--fault-inject``), so every recovery path runs in CI
without timing races. Grammar, comma-separated:

- ``runner=K@N``: runner K's process dies (``os._exit``) at its N-th rollout (1-based);
  ``runner=K@NxT`` repeats that for its first T incarnations (a runner that keeps dying).
- ``learner@N``: the learner's process dies at its N-th update (first incarnation only).
- ``runner-hang=K@N``, ``learner-hang@N``: the same call hangs instead (sleeps for an hour), as a
  process stuck in a deadlock or a lost network call would.
- ``node@N``: once the N-th round's rollouts are gathered, the Ray node of the first runner that
  is not on the driver's node dies (its raylet is killed), taking the rollouts in its object store
  with it (``ray_app.chaos``).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

HANG_S = 3600.0


@dataclass(frozen=True)
class Fault:
    target: str  # "runner", "learner" or "node"
    index: int  # runner index (0 for the learner)
    at_call: int
    incarnations: int = 1
    hang: bool = False


_RUNNER = re.compile(r"^runner(-hang)?=(\d+)@(\d+)(?:x(\d+))?$")
_LEARNER = re.compile(r"^learner(-hang)?@(\d+)$")
_NODE = re.compile(r"^node@(\d+)$")


def parse_faults(text: str | None) -> list[Fault]:
    faults = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if m := _RUNNER.match(part):
            faults.append(Fault("runner", int(m[2]), int(m[3]), int(m[4] or 1), hang=bool(m[1])))
        elif m := _LEARNER.match(part):
            faults.append(Fault("learner", 0, int(m[2]), hang=bool(m[1])))
        elif m := _NODE.match(part):
            faults.append(Fault("node", 0, int(m[1])))
        else:
            raise ValueError(f"--fault-inject: cannot parse {part!r} (expected runner[-hang]=K@N[xT], "
                             "learner[-hang]@N or node@N)")
    return faults


def maybe_fail(faults: list[Fault], target: str, index: int, call: int, incarnation: int) -> None:
    """Die or hang here if a fault says so for this process's ``call``-th call."""
    for f in faults:
        if f.target == target and f.index == index and f.at_call == call and incarnation < f.incarnations:
            if f.hang:
                time.sleep(HANG_S)
            os._exit(17)


def node_fault(faults: list[Fault], round_index: int) -> bool:
    """True when a node dies once round ``round_index`` (1-based) is gathered."""
    return any(f.target == "node" and f.at_call == round_index for f in faults)
