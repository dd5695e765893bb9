"""Text from images made safe to print: control characters shown as escapes, never sent to a terminal.

File names, symlink targets, ``#!`` lines and environment values come from the
image, which is the adversary's: an escape sequence among them would reach the
terminal of whoever runs ``canrun inspect`` or reads a CI log (cursor moves, a
rewritten line, a hyperlink, a title change), and a bidirectional override
would make a path read as another.  Every character Python does not consider
printable (C0 and C1 controls, DEL, format characters such as U+202E, line and
paragraph separators) is written as its ``\\x``/``\\u`` escape; the space stays.  A finding's message may
keep its line breaks and tabs (``keep``): every format lays those out itself (indented, ``<br>``, ``%0A``).
"""

from __future__ import annotations


def printable(text: str, *, keep: str = "") -> str:
    """``text`` with every non-printable character but the space (and those in ``keep``) replaced by its escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " or ch in keep else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
