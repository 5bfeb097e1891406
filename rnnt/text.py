"""The one text normalizer, shared by tokenizer training, corpus building and WER scoring.

Output alphabet: lower-case ``a-z``, the apostrophe inside words, and single spaces. Numbers, money,
percentages, times, ordinals and common symbols are spelled out; other punctuation is dropped.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = [(10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand")]
_ORDINAL_IRREGULAR = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                      "nine": "ninth", "twelve": "twelfth"}
_SYMBOLS = {"&": " and ", "@": " at ", "+": " plus ", "=": " equals ", "%": " percent ", "#": " number ",
            "°": " degrees ", "×": " times ", "½": " and a half "}
_CURRENCY = {"$": ("dollar", "dollars", "cent", "cents"), "£": ("pound", "pounds", "penny", "pence"),
             "€": ("euro", "euros", "cent", "cents")}


def int_to_words(n: int) -> str:
    """Spell a non-negative integer: 1205 -> 'one thousand two hundred five'."""
    if n < 0:
        return "minus " + int_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + int_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            high, rest = divmod(n, value)
            return int_to_words(high) + " " + name + ("" if rest == 0 else " " + int_to_words(rest))
    raise AssertionError("unreachable")


def year_to_words(n: int) -> str:
    """Spell a year the way it is read: 1984 -> 'nineteen eighty four', 2005 -> 'two thousand five'."""
    high, low = divmod(n, 100)
    if 2000 <= n < 2010 or high % 10 == 0:
        return int_to_words(n)
    if low == 0:
        return int_to_words(high) + " hundred"
    if low < 10:
        return int_to_words(high) + " oh " + _ONES[low]
    return int_to_words(high) + " " + int_to_words(low)


def ordinal_to_words(n: int) -> str:
    """Spell an ordinal: 21 -> 'twenty first'."""
    words = int_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def digits_to_words(s: str) -> str:
    """Read a digit string digit by digit: '007' -> 'zero zero seven'."""
    return " ".join(_ONES[int(c)] for c in s)


def _number(s: str) -> str:
    """Spell a plain number token (commas allowed as thousands separators, optional decimals)."""
    year_like = len(s) == 4 and s.isdigit()
    s = s.replace(",", "")
    if "." in s:
        whole, frac = s.split(".", 1)
        head = int_to_words(int(whole)) if whole else "zero"
        return head + " point " + digits_to_words(frac) if frac else head
    if len(s) > 1 and s.startswith("0"):
        return digits_to_words(s)
    n = int(s)
    if year_like and 1100 <= n <= 1999:
        return year_to_words(n)
    return int_to_words(n)


def _money(m: re.Match) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    amount = m.group(2).replace(",", "")
    scale = m.group(3)
    whole, _, frac = amount.partition(".")
    if scale:
        return f" {_number(amount)} {scale} {many} "
    units = int(whole) if whole else 0
    out = f"{int_to_words(units)} {one if units == 1 else many}"
    if frac:
        cents = int((frac + "0")[:2])
        if cents:
            out += f" {int_to_words(cents)} {sub_one if cents == 1 else sub_many}"
    return f" {out} "


def _time(m: re.Match) -> str:
    hour, minute, suffix = int(m.group(1)), int(m.group(2)), (m.group(3) or "").replace(".", "").lower()
    if minute == 0:
        words = int_to_words(hour) + ("" if suffix else " o'clock")
    elif minute < 10:
        words = int_to_words(hour) + " oh " + _ONES[minute]
    else:
        words = int_to_words(hour) + " " + int_to_words(minute)
    if suffix:
        words += " " + " ".join(suffix)
    return f" {words} "


def _ordinal(m: re.Match) -> str:
    return " " + ordinal_to_words(int(m.group(1))) + " "


_MONEY_RE = re.compile(r"([$£€])\s?(\d[\d,]*(?:\.\d+)?)(?:\s?(thousand|million|billion|trillion)\b)?")
_TIME_RE = re.compile(r"\b(\d{1,2}):(\d{2})\s?([AaPp]\.?[Mm]\.?)?(?![\w])")
_ORDINAL_RE = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b", re.IGNORECASE)
_PERCENT_RE = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s?%")
_NUMBER_RE = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def _spell_number(m: re.Match) -> str:
    s = m.group(0)
    if "," in s and not re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", s):
        return " " + " ".join(_number(p) for p in s.split(",") if p) + " "
    return " " + _number(s) + " "


def normalize(text: str) -> str:
    """Normalize text for training and scoring.

    >>> normalize("Dr. Smith paid $3.50 at 10:05 on the 2nd of May, 1999 -- 100% sure!")
    'dr smith paid three dollars fifty cents at ten oh five on the second of may nineteen ninety nine one hundred percent sure'
    """
    text = text.translate(_APOSTROPHES)
    text = _MONEY_RE.sub(_money, text)
    text = _TIME_RE.sub(_time, text)
    text = _ORDINAL_RE.sub(_ordinal, text)
    text = _PERCENT_RE.sub(lambda m: " " + _number(m.group(1)) + " percent ", text)
    text = re.sub(r"(\d)-(\d)", r"\1 to \2", text)
    text = _NUMBER_RE.sub(_spell_number, text)
    for sym, words in _SYMBOLS.items():
        text = text.replace(sym, words)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^a-z' ]+", " ", text)
    # Keep apostrophes only inside words ("don't"), drop quote marks.
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())
