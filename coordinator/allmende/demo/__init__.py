"""`allmende demo`: the whole data path on one machine, a coordinator and two volunteers.

The top floor: the only package that imports both roles, so it belongs to neither and sits
beside them (allmende.demo, kept in the coordinator's source root so that it ships in the
same wheel; the demo is the operator's rehearsal: it serves, creates a job and pulls the
dataset). Nothing but the `allmende` entry point imports it, and that only by name through
allmende.cli.groups (import-linter contracts in pyproject.toml check both)."""
