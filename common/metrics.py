"""What every service's metrics registry starts with."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge, disable_created_metrics
from prometheus_client.metrics_core import Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from common import __version__


class LabelledRegistry(CollectorRegistry):
    """A registry that adds constant labels (an edge worker's number) to every series it exposes.

    Each edge worker keeps its own lock-free counters and serves them itself, so the labels are what tell
    one worker's series from another's when Prometheus scrapes each worker's port."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        super().__init__()
        self._labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            labelled.samples = [sample._replace(labels={**sample.labels, **self._labels}) for sample in metric.samples]
            yield labelled


def new_registry(service: str, token_format: int, labels: Mapping[str, str] | None = None) -> CollectorRegistry:
    """A registry of a service's own, with process and Python platform metrics, build information (the
    link token format the service reads or writes among it), and no *_created series."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add bulk
    registry = LabelledRegistry(labels) if labels else CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    Gauge(
        "clickedge_build_info",
        "Always 1; the labels say what is running",
        ["service", "version", "token_format", "python"],
        registry=registry,
    ).labels(service, __version__, str(token_format), platform.python_version()).set(1)
    return registry
