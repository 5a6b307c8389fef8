"""Test-only failure injection (hidden flag ``--fault-inject``), so every recovery path runs in CI
without timing races. Grammar, comma-separated:

- ``runner=K@N``: runner K's process dies (``os._exit``) at its N-th rollout (1-based);
  ``runner=K@NxT`` repeats that for its first T incarnations (a runner that keeps dying).
- ``learner@N``: the learner's process dies at its N-th update (first incarnation only).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    target: str  # "runner" or "learner"
    index: int  # runner index (0 for the learner)
    at_call: int
    incarnations: int = 1


_RUNNER = re.compile(r"^runner=(\d+)@(\d+)(?:x(\d+))?$")
_LEARNER = re.compile(r"^learner@(\d+)$")


def parse_faults(text: str | None) -> list[Fault]:
    faults = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if m := _RUNNER.match(part):
            faults.append(Fault("runner", int(m[1]), int(m[2]), int(m[3] or 1)))
        elif m := _LEARNER.match(part):
            faults.append(Fault("learner", 0, int(m[1])))
        else:
            raise ValueError(f"--fault-inject: cannot parse {part!r} (expected runner=K@N[xT] or learner@N)")
    return faults


def maybe_die(faults: list[Fault], target: str, index: int, call: int, incarnation: int) -> None:
    for f in faults:
        if f.target == target and f.index == index and f.at_call == call and incarnation < f.incarnations:
            os._exit(17)
