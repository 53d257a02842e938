"""Errors that fedsim reports to users as one line and exit code 2."""


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
