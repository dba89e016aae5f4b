"""SDFT-style checks on a paraphrased gold answer: a rewrite that talks about the reference instead of answering
(Yang et al. 2024 reject these phrases) must not become a training target, even when its final answer is right."""
from __future__ import annotations

FILTER_VERSION = "sdft-filter-v1"

BANNED_PHRASES = (
    "reference answer", "reference response", "reference solution", "the reference", "your response",
    "my response", "now it's your turn", "now it is your turn", "as a guide", "### instruction",
    "### reference", "### question",
)


def paraphrase_rejection(text: str) -> str | None:
    """Why a paraphrase is unusable, or None when it passes."""
    if not text.strip():
        return "empty paraphrase"
    low = text.lower()
    for phrase in BANNED_PHRASES:
        if phrase in low:
            return f"mentions {phrase!r}"
    return None
