"""Exceptions that carry a message meant for the user.

The console script prints these as one clear line (no traceback): they name the file, the
setting or the training step that is wrong and say what to change.
"""


class GeminiError(Exception):
    """Base class of every user-facing error of gemini-pl."""


class DataError(GeminiError):
    """A data root, folder or file is missing, empty, unreadable or inconsistent."""


class ConfigError(GeminiError):
    """A configuration value is invalid (the message names the setting)."""


class CheckpointError(GeminiError):
    """A checkpoint or weight file cannot be loaded (the message names the file and keys)."""


class NonFiniteLossError(GeminiError):
    """Training produced too many consecutive non-finite losses (the message names the step)."""


def find_error(exc: BaseException, kind: type[GeminiError] = GeminiError) -> GeminiError | None:
    """The first ``kind`` error in ``exc``'s cause/context chain (MONAI and torch wrap the errors
    raised inside transforms and worker processes), or None."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
