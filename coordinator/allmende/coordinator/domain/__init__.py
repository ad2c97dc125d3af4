"""Coordinator logic with no transport: jobs, leasing, validation, assimilation."""
