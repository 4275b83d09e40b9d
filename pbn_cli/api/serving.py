"""The local web page for Python: ``serve`` a loaded model (compare, search, attribute, the runs' reports)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from pbn_cli.api.model import Model

__all__ = ["Server", "serve"]

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WEB_MODULES = ("fastapi", "uvicorn", "multipart")


class Server:
    """A bound page: ``address`` to open, ``public`` when others can reach it, ``run()`` serves until Ctrl-C."""

    def __init__(self, service, sock, host: str):
        self.service, self.sock, self.host = service, sock, host

    @property
    def address(self) -> str:
        from pbn_cli.web.app import address

        return address(self.sock)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def public(self) -> bool:
        return self.host not in LOOPBACK

    def run(self) -> None:
        from pbn_cli.web.app import serve as run_server

        try:
            run_server(self.service, self.sock)
        except KeyboardInterrupt:  # uvicorn has shut down and passes Ctrl-C on: the stop asked for
            pass


def check() -> None:
    """Refuse in one line, before a model is loaded, when the web extra is not installed."""
    from pbn_cli.core.extras import require

    require("web", WEB_MODULES, "pbn serve")


@contextlib.contextmanager
def serve(model: Model, *, host: str = "127.0.0.1", port: int = 8765) -> Iterator[Server]:
    """Bind the page to ``host``:``port`` (0: any free port) with ``model`` warmed up; the port is freed on exit.
    Needs the web extra: ``pip install 'pbn[web]'``."""
    check()
    from pbn_cli.web.app import bind
    from pbn_cli.web.service import Service

    service = Service(model.trained, model.device, model.workspace)  # before the port is taken: it may fail
    try:
        sock = bind(host, port)
    except BaseException:
        service.close()
        raise
    try:
        service.warm()
        yield Server(service, sock, host)
    finally:
        sock.close()
        service.close()
