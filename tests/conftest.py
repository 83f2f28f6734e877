"""Fixtures for the whole suite."""

from __future__ import annotations

import pytest

import fulmen.errors


@pytest.fixture(autouse=True)
def _fresh_warn_once(monkeypatch):
    """`warn_once` remembers messages per process; each test starts with a clean memory."""
    monkeypatch.setattr(fulmen.errors, "_warned", set())
