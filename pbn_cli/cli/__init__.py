"""The command line: thin command modules over the public API (pbn_cli.api), and the demo that drives them.

app.py holds the Typer app and the shared options; data.py, train.py,
evaluate.py, answer.py, collection.py and serve.py hold the commands by
group, each parsing its options, calling the API and printing what it
returns; demo.py runs the whole pipeline through the same app with argv.
"""

import importlib

from pbn_cli.cli.app import app, main

# importing a command module registers its commands; `pbn --help` lists them in this order
for _group in ("data", "train", "evaluate", "answer", "collection", "serve", "demo"):
    importlib.import_module(f"pbn_cli.cli.{_group}")

__all__ = ["app", "main"]
