import pytest

from rnnt.text import int_to_words, normalize, ordinal_to_words


@pytest.mark.parametrize("raw,expected", [
    ("Hello, World!", "hello world"),
    ("It's 5 o'clock.", "it's five o'clock"),
    ("I paid $3.50.", "i paid three dollars fifty cents"),
    ("$1", "one dollar"),
    ("£2 million", "two million pounds"),
    ("at 10:05 pm", "at ten oh five p m"),
    ("the 21st century", "the twenty first century"),
    ("50% off", "fifty percent off"),
    ("1,234 cats", "one thousand two hundred thirty four cats"),
    ("in 1999", "in nineteen ninety nine"),
    ("pi is 3.14", "pi is three point one four"),
    ("agent 007", "agent zero zero seven"),
    ("rock & roll", "rock and roll"),
    ("Café  naïve", "cafe naive"),
    ("'quoted' words", "quoted words"),
    ("pages 5-10", "pages five to ten"),
    ("", ""),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


def test_numbers():
    assert int_to_words(0) == "zero"
    assert int_to_words(1_000_001) == "one million one"
    assert ordinal_to_words(12) == "twelfth"
    assert ordinal_to_words(40) == "fortieth"


def test_idempotent():
    s = normalize("Dr. Smith's 3rd car cost $12,500 in 2019!")
    assert normalize(s) == s
    assert set(s) <= set("abcdefghijklmnopqrstuvwxyz' ")
