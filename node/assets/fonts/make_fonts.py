#!/usr/bin/env python3
"""Rebuilds the two agreement fonts in this folder from Debian's fonts-noto-cjk.

Run from anywhere: python3 node/assets/fonts/make_fonts.py
Needs: apt-get install fonts-noto-cjk unicode-data; pip install fonttools==4.61.1
See README.md beside this file for what the subsets hold and why.
"""

import bz2
import os
import sys

from fontTools import subset
from fontTools.ttLib import TTCollection

HERE = os.path.dirname(os.path.abspath(__file__))
NOTO = "/usr/share/fonts/opentype/noto"
UNIHAN = "/usr/share/unicode/Unihan_OtherMappings.txt.bz2"
# Index of the Simplified Chinese face in Debian's NotoSerifCJK-*.ttc collections.
SC_INDEX = 2


def two_byte_chars(codec, lead, trail):
    """Every character a double-byte legacy charset can encode."""
    out = set()
    for hi in range(lead[0], lead[1] + 1):
        for lo in range(trail[0], trail[1] + 1):
            try:
                out.add(bytes([hi, lo]).decode(codec))
            except UnicodeDecodeError:
                pass
    return out


def body_charset():
    chars = set()
    # Latin: ASCII, Latin-1 and Latin Extended-A (names from abroad), general punctuation.
    for lo, hi in [(0x20, 0x7E), (0xA0, 0x17F), (0x2000, 0x206F)]:
        chars.update(chr(c) for c in range(lo, hi + 1))
    # CJK symbols and punctuation, full-width forms.
    for lo, hi in [(0x3000, 0x303F), (0xFF01, 0xFF5E)]:
        chars.update(chr(c) for c in range(lo, hi + 1))
    # GB 2312: 6,763 hanzi plus its symbols, Greek, Cyrillic, kana and box drawing.
    chars |= two_byte_chars("gb2312", (0xA1, 0xF7), (0xA1, 0xFE))
    # Table of General Standard Chinese Characters (通用规范汉字表, 2013): 8,105 hanzi, the
    # characters of names and places that GB 2312 lacks. Unihan's kTGH field lists them.
    with bz2.open(UNIHAN, "rt", encoding="utf-8") as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] == "kTGH":
                chars.add(chr(int(parts[0][2:], 16)))
    # The 2,350 Hangul syllables of KS X 1001, for the names of Korean visitors.
    chars |= {
        c
        for c in two_byte_chars("euc_kr", (0xB0, 0xC8), (0xA1, 0xFE))
        if 0xAC00 <= ord(c) <= 0xD7A3
    }
    # Signs an agreement may use that none of the above holds.
    chars.update("¥€№℃×÷•")
    return chars


def heading_charset():
    chars = {chr(c) for c in range(0x20, 0x7F)}
    with open(os.path.join(HERE, "headings.txt"), encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                chars.update(line.strip())
    return chars


def make(ttc, out, chars):
    font = TTCollection(os.path.join(NOTO, ttc)).fonts[SC_INDEX]
    options = subset.Options()
    # Horizontal text only, no hinting: PDF viewers rasterise CFF well without it, and it saves
    # about a sixth of the size. Default OpenType layout features are kept (kerning, marks).
    options.hinting = False
    options.drop_tables += ["vhea", "vmtx", "VORG", "BASE"]
    options.name_languages = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in chars))
    subsetter.subset(font)
    # Keep the upstream timestamp in `head`, so that a rebuild gives the same bytes.
    font.recalcTimestamp = False
    font.save(os.path.join(HERE, out))
    cmap = font.getBestCmap()
    missing = sum(1 for c in chars if ord(c) not in cmap)
    print(f"{out}: {len(cmap)} characters, {os.path.getsize(os.path.join(HERE, out))} bytes "
          f"({missing} requested characters the font does not have)")


def main():
    make("NotoSerifCJK-Regular.ttc", "NotoSerifCJKsc-Regular-agreement.otf", body_charset())
    make("NotoSerifCJK-Bold.ttc", "NotoSerifCJKsc-Bold-headings.otf", heading_charset())
    return 0


if __name__ == "__main__":
    sys.exit(main())
