"""Shared fixtures. `lab`: the loopback TLS/HTTP lab, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scanner.lab import Lab
from tests.postgres import postgres_cluster  # noqa: F401  (session fixture: a throwaway PostgreSQL)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab")) as running:
        yield running
