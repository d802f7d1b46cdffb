"""What a reliability scenario measured, kept as one JSON file per scenario so RELIABILITY.md's
table is built from a real run (`python -m tests.reliability.report`).

Every scenario states the same columns: the load it ran, the faults it injected, and per event
what the system acknowledged and what it then served (lost = acknowledged but not served,
duplicated = served more than once), with the 5xx answers clients saw.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES_DIR = ROOT / "test-artifacts" / "reliability"


@dataclass(frozen=True)
class Tally:
    """Acknowledged events against what was served, cell by cell (a cell's surplus is duplicated, its shortfall lost)."""

    acknowledged: int
    served: int
    lost: int
    duplicated: int

    @classmethod
    def of(cls, expected: Counter, served: Counter) -> Tally:
        keys = expected.keys() | served.keys()
        return cls(
            acknowledged=sum(expected.values()),
            served=sum(min(expected[k], served[k]) for k in keys),
            lost=sum(max(expected[k] - served[k], 0) for k in keys),
            duplicated=sum(max(served[k] - expected[k], 0) for k in keys),
        )


@dataclass(frozen=True)
class Figures:
    scenario: str  # the guarantee's short name, as in RELIABILITY.md
    load: str  # what was offered: senders, batches, events, seconds
    faults: str  # what was broken, how often, for how long
    acknowledged: int  # events the system said it kept (202s, or records in the topic for scenarios starting there)
    served: int  # of those, events the served maps (or, where stated, the lake) hold
    lost: int
    duplicated: int
    http_5xx: int  # 5xx answers clients saw (503 with Retry-After is the documented "not kept, retry")
    test: str  # the test that measured it, as pytest names it
    notes: str = ""  # what else held (e.g. "no reader saw a partial hour in 412 reads")

    @classmethod
    def from_tally(cls, tally: Tally, **fields) -> Figures:
        return cls(acknowledged=tally.acknowledged, served=tally.served, lost=tally.lost, duplicated=tally.duplicated, **fields)


def record(figures: Figures) -> Path:
    """Write the scenario's figures where the report finds them, and print them beside the test's output."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    path = FIGURES_DIR / f"{re.sub(r'[^a-z0-9]+', '-', figures.scenario.lower()).strip('-')}.json"
    path.write_text(json.dumps(asdict(figures), indent=2) + "\n")
    print(f"\nreliability figures: {json.dumps(asdict(figures))}")
    return path


def load_all(directory: Path = FIGURES_DIR) -> list[Figures]:
    return [Figures(**json.loads(p.read_text())) for p in sorted(directory.glob("*.json"))]
