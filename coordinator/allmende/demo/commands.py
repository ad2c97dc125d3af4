"""`allmende demo`: a command group of its own, as the demo runs both roles. Only argparse
here: the handler (allmende.demo.run) is imported when it runs."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run a coordinator, two volunteers and a job end to end")
    p.add_argument(
        "--dir", default="allmende-demo", help="working folder (default ./allmende-demo)"
    )
    p.add_argument(
        "--kind",
        default="embed-text",
        choices=["embed-text", "filter-text", "clip-filter"],
        help="task kind to run (default embed-text; filter-text identifies the language of "
        "a bundled multilingual corpus and keeps de, en and fr; clip-filter scores bundled "
        "photographs against their captions, and shuffled captions, with a CLIP the "
        "coordinator serves)",
    )
    p.add_argument("--input", help="use this input file instead of the bundled corpus")
    p.add_argument(
        "--clip-model",
        metavar="DIR",
        help="clip-filter: serve this Hugging Face CLIP folder (e.g. openai/clip-vit-base-"
        "patch32's) instead of the tiny CLIP with random weights the demo builds",
    )
    p.add_argument(
        "--headless", action="store_true", help="progress lines instead of the TUI in a terminal"
    )
    p.set_defaults(handler="allmende.demo.run:demo")
