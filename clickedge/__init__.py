"""Clickedge's application shell: the command line, `up`, the embedded PostgreSQL and process supervision."""

from common import __version__

__all__ = ["__version__"]
