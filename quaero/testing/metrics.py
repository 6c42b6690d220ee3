"""Reading a service's Prometheus endpoint (tests and benchmarks): the address its ready line names."""
from __future__ import annotations

import re

import httpx


def scrape(banner: str) -> dict[str, float]:
    """Every sample of the metrics endpoint the banner names, by its name with labels."""
    url = re.search(r"metrics: (http://\S+/metrics)", banner)
    if url is None:
        raise ValueError(f"the service was started without --metrics-listen: {banner!r}")
    samples: dict[str, float] = {}
    for line in httpx.get(url.group(1), timeout=5).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def rpc_counts(samples: dict[str, float]) -> dict[str, float]:
    """Calls answered, by method (every status code)."""
    counts: dict[str, float] = {}
    for name, value in samples.items():
        found = re.fullmatch(r'quaero_rpc_total\{code="[A-Z_]+",method="(\w+)"\}', name)
        if found:
            counts[found.group(1)] = counts.get(found.group(1), 0.0) + value
    return counts
