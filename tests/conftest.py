"""Fixtures for the whole suite."""

from __future__ import annotations

import pytest

import fulmen.errors


@pytest.fixture(autouse=True)
def _fresh_warn_once(monkeypatch):
    """`warn_once` remembers messages per process; each test starts with a clean memory."""
    monkeypatch.setattr(fulmen.errors, "_warned", set())


# Lightning projects that the alias tests run in their own processes (on Lightning and on
# fulmen); they import Lightning's names, so this suite must not collect them itself.
collect_ignore = ["lightning_projects"]
