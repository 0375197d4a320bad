"""Split text into sentences so synthesis can stream sentence by sentence.

The first sentence is synthesized and played while the next one is synthesized,
so the first audio leaves after one sentence's synthesis, not the whole text's.
Pieces are never empty, keep their punctuation, and rejoin to the original text
modulo whitespace between them.
"""

from __future__ import annotations

import re

#: Terminal punctuation (Latin, ellipsis, CJK, Devanagari, Arabic), then closing quotes or
#: brackets. Latin punctuation ends a sentence only before whitespace or the end; CJK full
#: stops need no following space. Line breaks always end a piece.
_END = re.compile(
    r"""[.!?\u2026\u0964\u061f]+["'\u201d\u2019)\]]*(?=\s|$)"""
    r"""|[\u3002\uff01\uff1f]+["'\u201d\u2019)\]\u300d\u300f]*"""
    r"""|\n"""
)
#: Words whose trailing full stop does not end a sentence ("Dr. Smith").
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig"}
)

#: A sentence longer than this is split again at the last comma or space before it,
#: so one run-on sentence cannot delay the first audio by seconds.
MAX_PIECE_CHARS = 300


def split_sentences(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """Split ``text`` into sentences of at most ``max_chars`` characters."""
    pieces: list[str] = []
    start = 0
    for match in _END.finditer(text):
        if match.group().startswith(".") and _is_abbreviation(text, match.start()):
            continue
        pieces.extend(_cap(text[start : match.end()].strip(), max_chars))
        start = match.end()
    pieces.extend(_cap(text[start:].strip(), max_chars))
    return [p for p in pieces if p]


def _is_abbreviation(text: str, dot: int) -> bool:
    word = text[:dot].rsplit(None, 1)[-1] if text[:dot].strip() else ""
    word = word.lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _cap(sentence: str, max_chars: int) -> list[str]:
    out: list[str] = []
    while len(sentence) > max_chars:
        window = sentence[:max_chars]
        cut = max(window.rfind(", "), window.rfind("\u3001"), window.rfind("; "))
        if cut <= 0:
            cut = window.rfind(" ")
        cut = max_chars if cut <= 0 else cut + 1
        out.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        out.append(sentence)
    return out
