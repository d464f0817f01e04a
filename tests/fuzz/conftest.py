"""Hypothesis budgets. `make test` runs the bounded `ci` profile; a long run is

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/fuzz        # 20,000 examples per property
    HYPOTHESIS_PROFILE=long HYPOTHESIS_MAX_EXAMPLES=2000 ...             # a shorter one

(see SECURITY.md). Everything a fuzz test feeds in is local: no name is ever resolved over the network.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: `make test` stays reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def no_name_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fuzzed host names must never reach a DNS server: every name 'does not resolve'."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        import ipaddress

        try:
            ipaddress.ip_address(host)
        except (ValueError, TypeError):
            raise socket.gaierror(socket.EAI_NONAME, "fuzz: names do not resolve") from None
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
