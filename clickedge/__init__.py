"""Clickedge: self-hosted click tracking with signed links, a redirect edge and an exactly-once collector."""

__version__ = "0.1.0"
