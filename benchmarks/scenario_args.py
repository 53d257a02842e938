"""The command line the scenario benchmarks share: a scenario file and --set overrides."""

from __future__ import annotations

import argparse

ENGINES = ["flower", "inprocess"]


def scenario_parser(doc: str | None, *, engine: bool = False) -> argparse.ArgumentParser:
    """A parser with ``scenario`` and repeatable ``--set key=value`` (and ``--engine``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario")
    parser.add_argument("--set", action="append", default=[], help="override a scenario key: key=value")
    if engine:
        parser.add_argument("--engine", default="flower", choices=ENGINES)
    return parser
