"""One exception type for every user-facing fault: the message names the thing and the fix."""


class MkdError(Exception):
    """A fault in the user's input, data or environment. The CLI prints it without a traceback."""


class DataError(MkdError):
    """MASSIVE files that are missing, corrupt or malformed."""


class ConfigError(MkdError):
    """Parameters that cannot describe a valid experiment."""


class TrainingError(MkdError):
    """A training run that cannot go on (NaN loss, diverged)."""
