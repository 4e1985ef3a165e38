"""What every service's metrics registry starts with."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector


def new_registry() -> CollectorRegistry:
    """A registry of a service's own, with process and Python platform metrics, without *_created series."""
    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series only add bulk
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
