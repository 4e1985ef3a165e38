"""Shared by every part of Clickedge: the click-batch wire format, settings, logging, signatures, metrics."""

__version__ = "0.1.0"
