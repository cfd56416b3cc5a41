"""Text that came from a file or a file name, made safe to print on a terminal or show in a log.

A run folder, a checkpoint's metadata, a class name or a file name is whatever its author typed, and a
terminal obeys what it prints: ``ESC ] 0 ; ... BEL`` retitles the window, ``ESC [ 2 J`` clears the screen,
a carriage return overwrites the line before it, and the bidi overrides (U+202E ...) make ``exe.txt`` read as
``txt.exe``. Every such character (C0 and C1 controls, DEL, the bidi embeddings, overrides and isolates, the
line and paragraph separators, and the lone surrogates that undecodable file names become in Python) is
written as a visible escape (``\\x1b``, ``\\u202e``) instead: the text stays readable, and nothing in it acts.
"""

from __future__ import annotations

import re

_ALWAYS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_ONE_LINE = re.compile(f"[\n{_ALWAYS}]")  # tab kept: it cannot act
_LINES = re.compile(f"[{_ALWAYS}]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, keep_newlines: bool = False) -> str:
    """``str(text)`` with every control character shown as an escape; newlines too unless ``keep_newlines``
    (a one-line message must not be able to print a line of its own)."""
    return (_LINES if keep_newlines else _ONE_LINE).sub(_escape, str(text))


def elide(text: str, limit: int = 80) -> str:
    """``text`` cut in the middle to at most ``limit`` characters ("very-long…name.pt"): the start and the
    end of a name are what tell two names apart."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]
