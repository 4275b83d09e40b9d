"""Optional extras (`pip install 'pbn[NAME]'`): one check and one message for a feature whose modules are missing."""

from __future__ import annotations

from importlib.util import find_spec

from pbn_cli.core.errors import InputError


def require(extra: str, modules: tuple[str, ...], what: str) -> None:
    """``InputError`` naming the missing modules when ``what`` needs the ``extra`` and it is not fully installed."""
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise InputError(f"{what} needs the {extra} extra ({', '.join(missing)} missing): pip install 'pbn[{extra}]'")
