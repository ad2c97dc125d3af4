"""The volunteer's command group of `allmende` (commands.py; the entry point is allmende.cli)."""
