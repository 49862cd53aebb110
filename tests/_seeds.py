"""Seeds for random test weights: fresh each run, printed, and replayable.

A module-scoped fixture draws its weights once, so its seed is printed only in the first test's
setup. ``fresh_seed`` records every seed drawn, and the ``rng`` fixture (conftest.py) prints them
all in each test's setup, so a failure's report always shows the seeds it ran with.
``JAXCAM_TEST_SEED_<LABEL>=N`` replays one (the label upper-cased, e.g. ``..._TWINS``).
"""

from __future__ import annotations

import os

DRAWN: dict[str, int] = {}


def fresh_seed(label: str, bits: int = 32) -> int:
    """A fresh random seed below ``2**bits`` for the weights called ``label``, recorded."""
    replay = os.environ.get(f"JAXCAM_TEST_SEED_{label.upper()}")
    seed = int(replay) if replay else int.from_bytes(os.urandom(8), "little") % 2**bits
    DRAWN[label] = seed
    print(f"{label} seed: {seed}")
    return seed
