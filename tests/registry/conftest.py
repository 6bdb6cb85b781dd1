"""Fixtures of the registry tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.registry.bundles import build_fake


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    """A bundle of the fakes' policy and guardian (:func:`tests.registry.bundles.build_fake`)."""
    return build_fake(tmp_path)
