"""``results/report.md``: one Markdown page per run that shows its pictures and metric tables.

Several writers add to it (training curves at the end of ``fit``, the metric table of ``test``);
each owns one section, delimited by HTML comments ``<!-- section: NAME -->`` and
``<!-- /section: NAME -->``, which :func:`write_section` replaces in place (or appends), so that
``fit`` then ``test`` in the same folder leave both. Image links are relative to the report.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["REPORT_NAME", "write_section", "image_link"]

REPORT_NAME = "report.md"


def image_link(report: str | os.PathLike, image: str | os.PathLike, title: str) -> str:
    """Markdown ``![title](relative path)`` of ``image`` as seen from the ``report`` file."""
    rel = os.path.relpath(Path(image).resolve(), Path(report).resolve().parent)
    return f"![{title}]({Path(rel).as_posix()})"


def write_section(report: str | os.PathLike, name: str, markdown: str, title: str = "Run report") -> Path:
    """Put ``markdown`` as section ``name`` of ``report`` (created with ``# title``), replacing an
    earlier version of that section and keeping the others in their order."""
    path = Path(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else f"# {title}\n"
    start, end = f"<!-- section: {name} -->", f"<!-- /section: {name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, path)
    return path
