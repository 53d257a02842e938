"""Errors that fedsim reports to users as one line and exit code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FedsimError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The message is one line that names the problem and the fix.
    """


class ScenarioError(FedsimError):
    """A scenario file or ``--set`` override is invalid."""


class DataError(FedsimError):
    """A data set is missing, malformed or misconfigured."""


class PrivacyError(FedsimError):
    """A privacy setting is impossible (e.g. a target epsilon no noise can reach)."""


def did_you_mean(word: str, choices: Iterable[str], *, prefix: str = "") -> str:
    """``" did you mean 'PREFIXchoice'?"`` for the closest of ``choices``, or ``""``."""
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" did you mean '{prefix}{matches[0]}'?" if matches else ""
