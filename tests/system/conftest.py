"""Fixtures the system tests share (tests/conftest.py has the services)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from quaero.testing.wiki_site import WikiSite


@pytest.fixture
def wiki() -> Iterator[Callable[..., WikiSite]]:
    """wiki(pages, **options): a started WikiSite (quaero.testing.wiki_site), stopped after the test."""
    started: list[WikiSite] = []

    def make(pages: int, *args: Any, **options: Any) -> WikiSite:
        site = WikiSite(pages, *args, **options).start()
        started.append(site)
        return site

    yield make
    for site in started:
        site.stop()
