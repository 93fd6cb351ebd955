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


# ---------------------------------------------------------------- parse errors: one line
def traceback_wanted() -> bool:
    """``GEMINI_PL_TRACEBACK=1``: let errors through with their traceback (and jsonargparse's usage)."""
    return os.environ.get("GEMINI_PL_TRACEBACK", "") not in ("", "0")


def _suggest(word: str, candidates: Any) -> str:
    import difflib

    names = sorted({str(c) for c in candidates if c})
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _class_of(class_path: str) -> type | None:
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _module_classes(module: str) -> list[str]:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError:
        return []
    return [n for n in dir(mod) if not n.startswith("_") and isinstance(getattr(mod, n, None), type)]


def parse_error_line(message: str, known_keys: Any = ()) -> str:
    """One line for a jsonargparse error ``message`` (a nested multi-line text about union
    subtypes): the config key, what is wrong with it and, for a misspelled key or class name, the
    closest valid one (``known_keys``: the parser's own keys, for a key it does not accept)."""
    text = str(message)
    section = re.match(r'Parser key "([^"]+)"', text)
    section_name = section.group(1) if section else None
    class_path = re.search(r"Problem with given class_path '([^']+)'", text)
    cp = class_path.group(1) if class_path else None
    # a key the class does not accept
    m = re.search(r"Option '([^']+)' is not accepted", text)
    if m and section_name:
        key = m.group(1)
        from .cli import init_defaults

        cls = _class_of(cp) if cp else None
        names = init_defaults(cls) if cls is not None else {}
        return f"{section_name}.init_args.{key}: {cp or section_name} has no argument {key!r}{_suggest(key, names)}"
    # a class path that cannot be imported
    m = re.search(r"module '([\w.]+)' has no attribute '(\w+)'", text)
    if m:
        where = f"{section_name}: " if section_name else ""
        return (f"{where}class_path {m.group(1)}.{m.group(2)} does not exist"
                + _suggest(m.group(2), _module_classes(m.group(1))).replace("did you mean ", f"did you mean {m.group(1)}."))
    m = re.search(r"No module named '([\w.]+)'", text)
    if m:
        where = f"{section_name}: " if section_name else ""
        return f"{where}no module named {m.group(1)} (check the class_path)"
    # a value of the wrong type
    inner = re.findall(r'Parser key "([^"]+)":\s*\n\s*(.+)', text)
    if inner and section_name and len(inner) > 1:
        key, what = inner[-1]
        what = re.sub(r"<class '([\w.]+)'>", r"\1", what).replace("Expected a ", "expected ")
        return f"{section_name}.init_args.{key}: {what.strip()}" + (f" ({cp})" if cp else "")
    # a missing config file
    m = re.search(r'Parser key "(\w*config\w*)": File does not exist: (.+)', text)
    if m:
        return f"config file {m.group(2).strip()} does not exist"
    # an option the (sub)command does not have
    m = re.search(r"does not accept option '([^']+)'", text) or re.search(r"[Uu]nrecognized arguments: (\S+)", text)
    if m:
        key = m.group(1).lstrip("-")
        return f"{key}: no such setting{_suggest(key, known_keys)}"
    m = re.search(r"invalid choice: '([^']+)' \(choose from (.+)\)", text)
    if m:
        commands = re.findall(r"[\w-]+", m.group(2))
        return f"unknown command {m.group(1)!r}{_suggest(m.group(1), commands)}"
    # anything else: the informative lines of the nested message, joined
    skip = ("Subtypes:", "Errors:", "Given value", "- Expected a <class 'NoneType'>", "Does not validate against")
    lines = [ln.strip(" -") for ln in text.splitlines() if ln.strip() and not ln.strip(" -").startswith(skip)]
    return "; ".join(dict.fromkeys(lines)) or text.strip()


def parser_keys(parser: Any) -> list[str]:
    """Every dotted key of a jsonargparse parser (for suggestions)."""
    keys = []
    for action in getattr(parser, "_actions", []):
        dest = getattr(action, "dest", None)
        if isinstance(dest, str) and dest not in ("help",):
            keys.append(dest)
    return keys


class OneLineErrors:
    """Mixin for a jsonargparse ``ArgumentParser``: a parse error raises a one-line
    :class:`~gemini_pl.errors.ConfigError` (see :func:`parse_error_line`) instead of printing the
    usage block and the nested message (``GEMINI_PL_TRACEBACK=1``: jsonargparse's own output).
    Abbreviated options are not accepted: ``--trainer.max_epoch`` is a misspelling, not
    ``--trainer.max_epochs``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None):  # noqa: D102 - jsonargparse
        if not getattr(self, "exit_on_error", True) or traceback_wanted():
            return super().error(message, ex)  # type: ignore[misc]
        keys = parser_keys(getattr(ex, "subcommand_parser", None) or self)
        sub = getattr(self, "_subcommands_action", None)
        if sub is not None:
            for name, p in getattr(sub, "_name_parser_map", {}).items():
                keys += parser_keys(p)
        raise ConfigError(parse_error_line(message, keys)) from None


# ---------------------------------------------------------------- any error: one line
#: errno values of output/input problems that are the user's to fix (no traceback)
_OS_ERRNOS = {"ENOSPC": "the disk is full", "EDQUOT": "the disk quota is exceeded", "EACCES": "permission denied",
              "EPERM": "permission denied", "EROFS": "read-only file system", "ENOENT": "no such file or folder",
              "ENOTDIR": "not a folder", "EISDIR": "is a folder"}


def _worker_line(text: str) -> str:
    """The error line of a DataLoader worker's re-raised error (torch puts the worker's whole
    traceback into the message): its last line, without the exception class."""
    if "Original Traceback" not in text:
        return text
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())


def one_line(exc: BaseException) -> tuple[str, int] | None:
    """``(message, exit status)`` for an error that is the user's to fix, or None (a bug: keep the
    traceback). A gemini-pl error anywhere in the cause chain, a known OS error (disk full, no
    permission, read-only folder) and a DataLoader worker's error give their own line."""
    import errno as _errno

    from .errors import find_error

    err = original_error(exc)
    gem = find_error(exc) or (err if isinstance(err, GeminiError) else None)
    if gem is not None:
        text = str(gem)
        line = _worker_line(text) if "Original Traceback" in text else " ".join(text.split())
        return line, getattr(gem, "exit_code", 2)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    e: BaseException | None = exc
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MisconfigurationException):  # Lightning's word for a trainer setting it cannot serve
            return f"trainer: {' '.join(str(e).split())}", 2
        if isinstance(e, OSError) and e.errno is not None:
            name = _errno.errorcode.get(e.errno, "")
            if name in _OS_ERRNOS:
                where = e.filename or ""
                what = e.strerror or _OS_ERRNOS[name]
                return (f"{where}: {what}" if where else what) + _os_hint(name), 1
        text = str(e)
        if "unexpected pos" in text or "PytorchStreamWriter failed" in text or "file write failed" in text:
            return f"writing a checkpoint failed ({_first(text)}): is the disk full? the previous checkpoint is kept", 1
        e = e.__cause__ or e.__context__
    return None


def _first(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _os_hint(name: str) -> str:
    if name in ("ENOSPC", "EDQUOT"):
        return " (the disk is full: free space or set another output folder; files written before are kept)"
    if name in ("EACCES", "EPERM", "EROFS"):
        return " (choose a writable output folder, e.g. --trainer.default_root_dir or --out)"
    return ""
