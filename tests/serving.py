"""Serving a tiny trained run in-process for the tests of pbn serve (HTTP and browser)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from pbn_cli.cli import app
from pbn_cli.core.device import select_device
from pbn_cli.core.workspace import Workspace
from pbn_cli.data.paths import image_root
from pbn_cli.model import trained as models
from pbn_cli.web.app import address, bind, server
from pbn_cli.web.service import Service

runner = CliRunner()


def painting_files(ws: Path, split: str | None = None) -> list[Path]:
    """The workspace's painting files (one split's with ``split``), in the split manifest's order."""
    table = pd.read_parquet(ws / "manifests/split.parquet")
    root = image_root(Workspace(ws))
    return [Path(root) / p for p in (table if split is None else table[table["split"] == split])["path"]]


def cli_json(ws: Path, *args) -> dict:
    result = runner.invoke(app, [*map(str, args), "--json", "--device", "cpu", "-w", str(ws)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class Served:
    def __init__(self, ws: Path | None, model_file: Path | None = None):
        self.ws = ws
        model = models.from_file(model_file) if model_file else models.from_run(Workspace(ws), None)
        self.service = Service(model, select_device("cpu"), Workspace(ws) if ws else None)
        sock = bind("127.0.0.1", 0)
        self.url = address(sock)
        self.server = server(self.service)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def post(self, path: str, files: dict, **data):
        opened = {k: (Path(v).name, Path(v).read_bytes()) if isinstance(v, Path) else v for k, v in files.items()}
        return self.client.post(path, files=opened, data={k: str(v) for k, v in data.items()})

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)
        self.client.close()
        self.service.close()



def outside_painting(ws: Path, tmp_path: Path) -> Path:
    """A workspace painting saved anew elsewhere (so search does not leave it out as the query itself)."""
    path = tmp_path / "query.png"
    with Image.open(painting_files(ws)[3]) as im:
        im.convert("RGB").rotate(90, expand=True).save(path)
    return path
