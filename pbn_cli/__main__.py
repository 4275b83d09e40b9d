"""`python -m pbn_cli`: the same CLI as `pbn` (torchrun starts it this way)."""

from pbn_cli.cli import main

main()
