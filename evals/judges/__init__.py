"""Judges: decide whether a response is correct for an example. Shared by target building and evaluation."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Verdict:
    """A judge's decision. `reason` is short and human-readable; `extracted` is what the judge compared."""

    correct: bool
    reason: str
    extracted: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
