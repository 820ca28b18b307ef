"""``--milestones``: the steps at which a run keeps a permanent checkpoint (``checkpoints/step_XXXXXXX.pt``) besides
``latest.pt``.

A comma-separated list of

- ``P%``: every P percent of the run, i.e. steps ``round(k·P/100·total)`` for k = 1, 2, … up to the total (the default
  ``10%`` keeps one at every tenth of the run, the last one at the final step);
- ``S``: step S;
- ``Eep``: epoch E (``round(E·steps_per_epoch)``; fractions allowed, e.g. ``0.5ep``);

or ``none`` (only ``latest.pt``, and ``--keep-every`` milestones when set). Steps past the run's end are dropped.
"""
from __future__ import annotations

import re

from rectok_core.errors import RectokError

_ITEM = re.compile(r"^(?:(?P<pct>\d+(?:\.\d+)?)%|(?P<ep>\d+(?:\.\d+)?)ep|(?P<step>\d+))$")

MILESTONES_HELP = ("permanent checkpoints besides latest.pt: comma-separated P% (every P percent of the run), steps "
                   "(1000,5000) and epochs (20ep,40ep), or none; --keep-every N adds every N steps")


def parse_milestones(spec: str) -> list[tuple[str, float]]:
    """The items of a ``--milestones`` spec as ``(kind, value)`` with kind ``pct``, ``ep`` or ``step``; a
    one-line error for a malformed one."""
    text = str(spec).strip().lower()
    if text in ("none", ""):
        return []
    items = []
    for raw in text.split(","):
        m = _ITEM.match(raw.strip())
        if m is None:
            raise RectokError(f"--milestones {spec!r}: {raw.strip()!r} is none of P% (every P percent of the run), "
                              f"a step (1000) or an epoch (20ep); or give none")
        kind = next(k for k in ("pct", "ep", "step") if m.group(k) is not None)
        value = float(m.group(kind))
        if value <= 0 or (kind == "pct" and value > 100):
            raise RectokError(f"--milestones {spec!r}: {raw.strip()!r} must be positive"
                              + (" and at most 100%" if kind == "pct" else ""))
        items.append((kind, value))
    return items


def milestone_steps(spec: str, total: int, steps_per_epoch: int, keep_every: int = 0) -> set[int]:
    """The steps in 1..``total`` at which a run of ``total`` steps (``steps_per_epoch`` per epoch) keeps a
    milestone under ``spec``, plus every multiple of ``keep_every`` (when > 0)."""
    steps: set[int] = set()
    for kind, value in parse_milestones(spec):
        if kind == "pct":
            k = 1
            while (s := round(k * value * total / 100)) <= total and k * value <= 100 + 1e-9:
                steps.add(s)
                k += 1
        elif kind == "ep":
            steps.add(round(value * steps_per_epoch))
        else:
            steps.add(int(value))
    if keep_every > 0:
        steps.update(range(keep_every, total + 1, keep_every))
    return {s for s in steps if 0 < s <= total}
