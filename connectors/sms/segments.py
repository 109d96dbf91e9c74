"""How many SMS segments a text takes: GSM 03.38 (7-bit) when it fits, UCS-2 otherwise.

GSM-7 counts septets: the basic table is one each, the extension table (``^{}\\[~]|€`` and form
feed) is an escape plus the character, two septets. A single message holds 160 septets; a
concatenated one 153 per part (the UDH takes the rest). UCS-2 counts UTF-16 code units
(an emoji outside the BMP is a surrogate pair: two units), 70 single and 67 per part.

Parts are packed greedily and an escape sequence or surrogate pair is never split between two
parts (handsets could not reassemble it), so a character at a boundary can open a new part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "LIMITS", "SegmentInfo", "count_segments", "is_gsm7"]

Encoding = Literal["GSM-7", "UCS-2"]

#: GSM 03.38 basic character set (the escape code 0x1B itself is left out: it is not text).
GSM7_BASIC: Final[frozenset[str]] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
#: GSM 03.38 extension table: each costs two septets (escape + character).
GSM7_EXTENSION: Final[frozenset[str]] = frozenset("\f^{}\\[~]|€")
_GSM7_ALL: Final[frozenset[str]] = GSM7_BASIC | GSM7_EXTENSION


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """``units``: septets for GSM-7, UTF-16 code units for UCS-2."""

    encoding: Encoding
    segments: int
    units: int


#: Units in a single message, and per part of a concatenated one, by encoding.
LIMITS: Final[dict[Encoding, tuple[int, int]]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM 03.38 basic or extension table."""
    return _GSM7_ALL.issuperset(text)


def _costs(text: str, encoding: Encoding) -> list[int]:
    """Units each character takes; a character's units must stay in one part."""
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _pack(costs: list[int], part_size: int) -> int:
    """Parts needed when no character's units may straddle two parts."""
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part_size:
            parts, used = parts + 1, 0
        used += cost
    return parts


def count_segments(text: str) -> SegmentInfo:
    """Encoding, segment count and total units of ``text`` (empty text: 0 segments)."""
    if is_gsm7(text):
        encoding: Encoding = "GSM-7"
        units = len(text) + sum(text.count(ch) for ch in GSM7_EXTENSION)
    else:
        encoding = "UCS-2"
        units = len(text.encode("utf-16-le")) // 2
    single, part = LIMITS[encoding]
    if units <= single:
        return SegmentInfo(encoding, 1 if units else 0, units)
    if units == len(text):  # every character is one unit: nothing can straddle a boundary
        return SegmentInfo(encoding, -(-units // part), units)
    return SegmentInfo(encoding, _pack(_costs(text, encoding), part), units)
