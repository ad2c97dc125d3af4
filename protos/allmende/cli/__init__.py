"""The `allmende` command: one entry point for coordinators, volunteers and researchers."""

from allmende.cli.main import main

__all__ = ["main"]
