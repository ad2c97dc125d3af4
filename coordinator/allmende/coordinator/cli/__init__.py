"""The operator's command groups of `allmende`: coordinator, job and volunteers (commands.py;
the entry point is allmende.cli)."""
