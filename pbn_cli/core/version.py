"""pbn's version: the package's (``pbn_cli.__version__``, pyproject's dynamic version) and what files it writes
record."""

VERSION = "0.1.0"
