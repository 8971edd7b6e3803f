"""Showing text that came from someone else (metric names, tags, run names, string values) on a terminal or a page.

``printable(text)`` writes every character that is not printable as a Python-style escape, so that what is shown
cannot move the cursor, change colours, clear the screen (ESC sequences), break a table row (CR, LF), end a
string early (NUL) or reorder the text around it (bidi embeddings, overrides, isolates and marks: "\\u202eevil"
displays as "live"). Not printable means ``str.isprintable()`` is false: the C0 and C1 controls and DEL
(``\\x1b``, ``\\x00``, ``\\x0a``), format characters (``\\u202e``, ``\\u2066``, ``\\u200e``, zero-width ones),
line and paragraph separators, spaces other than U+0020 (``\\xa0``), private-use, unassigned code points and
lone surrogates. Printable text comes back unchanged (backslashes too: the escapes are for reading, not
for parsing back).

Text that comes in is checked by the same module: ``check_text`` (it can travel as UTF-8) for any string,
``check_label`` (also printable) for keys, tags and run names, which every reader shows.
"""

from __future__ import annotations

import unicodedata

from schemas.errors import ValidationError

__all__ = ["check_label", "check_text", "escape_char", "printable"]


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


def check_text(text: str, what: str) -> str:
    """Return *text* if it can travel as UTF-8 (Avro strings are UTF-8); a lone surrogate such as '\\ud800'
    cannot, and would make the whole batch unencodable in the background sender."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValidationError(
                f"{what} is not valid Unicode: {exc.reason} at position {exc.start} (it cannot be encoded as UTF-8)",
                value=text,
            ) from None
    return text


#: Characters that reorder the text around them when displayed (bidi embeddings, overrides, isolates and
#: marks): "\u202eevil" displays as "live". Refused in keys, tags and run names, as are C0/C1 controls.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_label(text: str, what: str) -> str:
    """Return *text* if it is valid UTF-8 text (``check_text``) without C0/C1 control characters (ESC, NUL,
    CR, LF, ...) or bidi formatting characters: the rule for keys, tags and run names, which every reader
    shows (a terminal table, the page, Grafana). String *values* may hold any valid text."""
    if text.isprintable():  # every character printable (the usual case): no controls, no bidi formatting
        return text
    check_text(text, what)
    for i, char in enumerate(text):
        if char in _BIDI or unicodedata.category(char) == "Cc":
            raise ValidationError(
                f"{what} has the control or text-direction character U+{ord(char):04X} at position {i}: keys, "
                "tags and run names must be printable text",
                value=text,
            )
    return text
