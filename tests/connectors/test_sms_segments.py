"""SMS segment counting: GSM-7 septets (extension = 2), UCS-2 code units, part boundaries."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.sms.segments import GSM7_BASIC, GSM7_EXTENSION, SegmentInfo, count_segments

BASIC_SPECIALS = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r"
EXTENSION = "^{}\\[]~|€\f"
EMOJI = "😀"  # outside the BMP: a surrogate pair, two UTF-16 units
CYRILLIC = "Ж"  # in the BMP, not in GSM 03.38: one UCS-2 unit

CASES = [
    # name, text, encoding, segments, units
    ("empty", "", "GSM-7", 0, 0),
    ("one_char", "a", "GSM-7", 1, 1),
    ("gsm_160_single", "a" * 160, "GSM-7", 1, 160),
    ("gsm_161_two_parts", "a" * 161, "GSM-7", 2, 161),
    ("gsm_153x2", "a" * 306, "GSM-7", 2, 306),
    ("gsm_153x2_plus_one", "a" * 307, "GSM-7", 3, 307),
    ("gsm_153x3", "a" * 459, "GSM-7", 3, 459),
    ("basic_specials_one_septet_each", BASIC_SPECIALS, "GSM-7", 1, len(BASIC_SPECIALS)),
    ("extension_two_septets_each", EXTENSION, "GSM-7", 1, 2 * len(EXTENSION)),
    ("euro_80_fills_single", "€" * 80, "GSM-7", 1, 160),
    ("euro_81_two_parts", "€" * 81, "GSM-7", 2, 162),
    ("extension_ends_at_160", "a" * 158 + "€", "GSM-7", 1, 160),
    ("extension_pushes_past_160", "a" * 159 + "€", "GSM-7", 2, 161),
    ("extension_fits_part_end", "a" * 151 + "€" + "a" * 153, "GSM-7", 2, 306),
    # 306 septets would fit 2×153, but the escape pair may not straddle parts: 152|2+152→3
    ("extension_straddles_boundary", "a" * 152 + "€" + "a" * 152, "GSM-7", 3, 306),
    ("newline_and_cr_are_gsm", "line1\r\nline2", "GSM-7", 1, 12),
    ("ucs2_70_single", CYRILLIC * 70, "UCS-2", 1, 70),
    ("ucs2_71_two_parts", CYRILLIC * 71, "UCS-2", 2, 71),
    ("ucs2_67x2", CYRILLIC * 134, "UCS-2", 2, 134),
    ("ucs2_67x2_plus_one", CYRILLIC * 135, "UCS-2", 3, 135),
    ("one_non_gsm_char_switches_all", "a" * 100 + CYRILLIC, "UCS-2", 2, 101),
    ("extension_in_ucs2_is_one_unit", "€" * 69 + CYRILLIC, "UCS-2", 1, 70),
    ("emoji_is_two_units", EMOJI, "UCS-2", 1, 2),
    ("emoji_35_fills_single", EMOJI * 35, "UCS-2", 1, 70),
    ("emoji_36_two_parts", EMOJI * 36, "UCS-2", 2, 72),
    ("emoji_at_70_boundary", "a" * 68 + EMOJI, "UCS-2", 1, 70),
    ("emoji_past_70_boundary", "a" * 69 + EMOJI, "UCS-2", 2, 71),
    # 134 units would fit 2×67, but a surrogate pair may not be split: 66|2+66→3
    ("emoji_straddles_boundary", "a" * 66 + EMOJI + "a" * 66, "UCS-2", 3, 134),
    ("euro_with_emoji_is_ucs2", "€" + EMOJI, "UCS-2", 1, 3),
    ("lowercase_c_cedilla_not_gsm", "ç", "UCS-2", 1, 1),
    ("backtick_not_gsm", "`", "UCS-2", 1, 1),
    ("accented_a_acute_not_gsm", "á", "UCS-2", 1, 1),
    ("escape_code_itself_not_text", "\x1b", "UCS-2", 1, 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "text", "encoding", "segments", "units"), CASES, ids=[c[0] for c in CASES]
)
def test_count_segments(name: str, text: str, encoding: str, segments: int, units: int) -> None:
    assert count_segments(text) == SegmentInfo(encoding, segments, units)


def test_tables_are_disjoint_and_complete() -> None:
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert len(GSM7_BASIC) == 127  # 128 code points less the escape
    assert len(GSM7_EXTENSION) == 10


@given(st.text(alphabet=sorted(GSM7_BASIC), max_size=700))
def test_basic_gsm_matches_closed_form(text: str) -> None:
    info = count_segments(text)
    expected = 0 if not text else 1 if len(text) <= 160 else math.ceil(len(text) / 153)
    assert info == SegmentInfo("GSM-7", expected, len(text))


@given(st.text(alphabet=st.characters(codec="utf-16", exclude_categories=["Cs"]), max_size=400))
def test_any_text_is_bounded(text: str) -> None:
    info = count_segments(text)
    if info.encoding == "UCS-2":
        assert info.units == len(text.encode("utf-16-le")) // 2
    single, part = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    if info.units == 0:
        assert info.segments == 0
    elif info.units <= single:
        assert info.segments == 1
    else:  # packing never splits a character, so it can only add parts, at most one per part
        lower = math.ceil(info.units / part)
        assert lower <= info.segments <= math.ceil(info.units / (part - 1))
