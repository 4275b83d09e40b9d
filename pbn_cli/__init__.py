"""pbn: learn painters' hands and tell whether two paintings share an artist."""

__version__ = "0.1.0"
