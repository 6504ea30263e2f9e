"""The ``sae`` command line (``sae.cli.main:main``); one module per group of subcommands."""

from sae.cli.main import main

__all__ = ["main"]
