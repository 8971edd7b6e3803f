"""Showing text that came from someone else (metric names, tags, run names, string values) on a terminal or a page.

``printable(text)`` writes every character that is not printable as a Python-style escape, so that what is shown
cannot move the cursor, change colours, clear the screen (ESC sequences), break a table row (CR, LF), end a
string early (NUL) or reorder the text around it (bidi embeddings, overrides, isolates and marks: "\\u202eevil"
displays as "live"). Not printable means ``str.isprintable()`` is false: the C0 and C1 controls and DEL
(``\\x1b``, ``\\x00``, ``\\x0a``), format characters (``\\u202e``, ``\\u2066``, ``\\u200e``, zero-width ones),
line and paragraph separators, spaces other than U+0020 (``\\xa0``), private-use, unassigned code points and
lone surrogates. Printable text comes back unchanged (backslashes too: the escapes are for reading, not
for parsing back).
"""

from __future__ import annotations

__all__ = ["escape_char", "printable"]


def escape_char(char: str) -> str:
    """One character as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """*text* with every unprintable character written as an escape (``"\\x1b[31m"`` -> ``"\\\\x1b[31m"``)."""
    if text.isprintable():  # the usual case, in C
        return text
    return "".join(char if char.isprintable() else escape_char(char) for char in text)
