"""One line naming the setting, instead of a traceback, for an invalid model or data argument.

A LightningModule or data module that rejects an argument in its ``__init__`` raises
``ValueError`` (e.g. ``backbone widths must be multiples of 8``); jsonargparse wraps it in a
``ValueError: Does not validate against any of the Union subtypes`` that prints the whole config.
:func:`instantiation_error` digs out the original error and names the config key it is about.
Set ``GEMINI_PL_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import ConfigError, GeminiError

__all__ = ["instantiation_error", "original_error"]

#: exception types that an ``__init__`` raises for a bad argument value
_ARGUMENT_ERRORS = (ValueError, TypeError)


def original_error(exc: BaseException) -> BaseException:
    """The first error of ``exc``'s cause/context chain (the one raised by the user's class)."""
    seen = set()
    e = exc
    while id(e) not in seen:
        seen.add(id(e))
        nxt = e.__cause__ or e.__context__
        if nxt is None:
            break
        e = nxt
    return e


def _section_keys(config: Any, section: str) -> tuple[str | None, list[str]]:
    node = config.get(section) if hasattr(config, "get") else None
    if not hasattr(node, "get"):
        return None, []
    init = node.get("init_args")
    keys = list(init.keys()) if hasattr(init, "keys") else []
    return node.get("class_path"), keys


def instantiation_error(exc: BaseException, config: Any) -> GeminiError | None:
    """A one-line :class:`~gemini_pl.errors.ConfigError` for ``exc`` raised while the CLI built the
    model / data module from ``config`` (the subcommand's section), or None to let ``exc`` through
    (a gemini-pl error is returned as it is). The key named is the model's (else the data
    module's) init argument whose name occurs as a word in the original message."""
    if os.environ.get("GEMINI_PL_TRACEBACK", "") not in ("", "0"):
        return None
    err = original_error(exc)
    if isinstance(err, GeminiError):
        return err
    if not isinstance(err, _ARGUMENT_ERRORS):
        return None
    message = " ".join(str(err).split()) or type(err).__name__
    for section in ("model", "data"):
        class_path, keys = _section_keys(config, section)
        if class_path is None:
            continue
        hits = [k for k in keys if re.search(rf"(?<![\w.]){re.escape(k)}(?![\w])", message)]
        if hits:
            hits.sort(key=lambda k: message.find(k))
            return ConfigError(f"{section}.init_args.{hits[0]}: {message} ({class_path})")
    named = [c for c in (_section_keys(config, s)[0] for s in ("model", "data")) if c]
    where = " or ".join(named) if named else "the model or data module"
    return ConfigError(f"invalid argument of {where}: {type(err).__name__}: {message}")
