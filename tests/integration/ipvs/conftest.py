"""The IPVS tests need a kernel with IP_VS (run them with `tests/uml/run.py -- .venv/bin/pytest
tests/integration/ipvs`); anywhere else every test here is skipped with one reason saying why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IP_VS_PROC = Path("/proc/net/ip_vs")


def ipvs_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "IPVS tests need root"
    if not IP_VS_PROC.exists():
        return "this kernel has no IP_VS: run them in UML (tests/uml/run.py -- pytest tests/integration/ipvs)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = ipvs_unavailable_reason()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))
