"""The volunteer's Textual TUI: the only package of the client that imports textual.

It drives the same engine as headless mode through the engine's thread-safe controls and
receives its events as typed messages (see app.py).
"""
