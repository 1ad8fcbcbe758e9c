"""Reading GET /metrics as Prometheus does: the text format, parsed by prometheus-client."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(base_url: str, token: str | None = None) -> Samples:
    """Every sample of `base_url`/metrics, by name and sorted labels."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.get(f"{base_url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    return parse(answer.text)


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the process has not counted it yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
