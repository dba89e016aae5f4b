"""Shared fixtures. The data directory is ../shared/data beside the checkout unless S3FT_DATA_DIR says otherwise."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = Path(os.environ.get("S3FT_DATA_DIR", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        pytest.fail(f"benchmark data directory {d} not found; set S3FT_DATA_DIR")
    return d


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """A local HF checkpoint of the real SmolLM2-135M-Instruct, fetched and converted by the project's own code."""
    from repro.models import fetch  # noqa: PLC0415  (heavy import kept out of collection)

    return fetch("smollm2-135m-instruct")
