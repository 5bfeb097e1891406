"""Training manifests from speech corpora as they are distributed: ``prepare(dataset, root, out)``.

Layouts (``root`` is the folder named in brackets):

* ``librispeech`` [``LibriSpeech/train-clean-100`` or any folder above it]:
  ``SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt`` with ``UTTERANCE-ID TEXT`` lines, beside
  ``UTTERANCE-ID.flac``.
* ``commonvoice`` [``cv-corpus-*/en``]: ``{split}.tsv`` (tab-separated with a header naming at least
  ``path`` and ``sentence``) and ``clips/PATH`` (mp3).
* ``tedlium`` [``TEDLIUM_release-3/legacy/train`` or any folder holding ``stm/`` and ``sph/``]:
  ``stm/TALK.stm`` lines ``TALK CHANNEL SPEAKER START END <LABEL> TEXT`` and one ``sph/TALK.sph`` per
  talk. Our manifest holds whole files, so every segment is cut into a 16 kHz WAV file under
  ``segments_dir`` (default: beside the manifest, ``OUT-STEM_segments/TALK/``). Segments whose text is
  ``ignore_time_segment_in_scoring`` are left out; TED-LIUM's split contractions (``it 's``) are
  joined and markers such as ``<unk>`` or ``{NOISE}`` dropped.
* ``csv`` [the CSV file itself]: rows ``audio,transcript-file``, paths relative to the CSV's folder; an
  optional header row is recognised.

Every text goes through ``rnnt.text.normalize``; every duration is measured from the audio (headers,
or the decoded samples with ``verify``). Missing, unreadable or empty audio and empty transcripts are
reported in ``PrepareReport.skipped`` and left out, never fatal.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from rnnt.audio import SAMPLE_RATE, duration_seconds, load_audio, write_wav
from rnnt.data import Entry, write_manifest
from rnnt.errors import ConfigError, DataError, RnntError
from rnnt.text import normalize

DATASETS = ("librispeech", "commonvoice", "tedlium", "csv")
IGNORE_SEGMENT = "ignore_time_segment_in_scoring"
MIN_SEGMENT_SECONDS = 0.1  # shorter TED-LIUM segments (or ones past the end of the audio) are skipped

Progress = Callable[[int, int], None]  # (items done, items in all)


@dataclass(frozen=True)
class Candidate:
    """An utterance found in a corpus's listing, before its audio is checked."""

    audio: str  # absolute path
    text: str  # transcript as the corpus writes it
    source: str  # where it was listed ("file:line"), for reports


@dataclass
class PrepareReport:
    out: str  # the manifest written
    entries: int  # utterances in it
    seconds: float  # their total duration
    skipped: list[str] = field(default_factory=list)  # "where: why" for every item left out
    ignored: int = 0  # TED-LIUM segments marked ignore_time_segment_in_scoring


def prepare(dataset: str, root: str, out: str, split: str = "train", segments_dir: str = "", workers: int = 8,
            verify: bool = False, progress: Progress | None = None) -> PrepareReport:
    """Scan ``root`` in ``dataset``'s layout, check every item and write the manifest ``out``."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    if not os.path.exists(root):
        raise DataError(f"--root {root} does not exist")
    ignored = 0
    if dataset == "tedlium":
        seg_dir = segments_dir or os.path.splitext(os.path.abspath(out))[0] + "_segments"
        entries, skipped, ignored = _tedlium(root, seg_dir, progress)
    else:
        listing = {"librispeech": _librispeech, "commonvoice": lambda r: _commonvoice(r, split), "csv": _csv}
        candidates, skipped = listing[dataset](root)
        entries, bad = _check(candidates, workers, verify, progress)
        skipped += bad
    if not entries:
        example = f"; e.g. {skipped[0]}" if skipped else ""
        raise DataError(f"no usable utterances under {root} as {dataset} ({len(skipped)} skipped{example})")
    write_manifest(out, entries)
    return PrepareReport(out, len(entries), sum(e.duration for e in entries), skipped, ignored)


# ---------------------------------------------------------------------------------------------- listings


def _librispeech(root: str) -> tuple[list[Candidate], list[str]]:
    listings = sorted(glob.glob(os.path.join(root, "**", "*.trans.txt"), recursive=True))
    if not listings:
        raise DataError(f"no *.trans.txt under {root}; point --root at LibriSpeech/<split> (e.g. train-clean-100)")
    out, bad = [], []
    for listing in listings:
        folder = os.path.dirname(os.path.abspath(listing))
        with open(listing, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                parts = line.strip().split(" ", 1)
                if not parts[0]:
                    continue
                if len(parts) < 2:
                    bad.append(f"{listing}:{n}: no transcript after the utterance id")
                    continue
                out.append(Candidate(os.path.join(folder, parts[0] + ".flac"), parts[1], f"{listing}:{n}"))
    return out, bad


def _commonvoice(root: str, split: str) -> tuple[list[Candidate], list[str]]:
    tsv = os.path.join(root, f"{split}.tsv")
    if not os.path.isfile(tsv):
        have = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(root, "*.tsv")))
        raise DataError(f"{tsv} not found; --root must hold Common Voice's <split>.tsv and clips/ "
                        f"(splits here: {', '.join(have) or 'none'})")
    clips = os.path.join(os.path.abspath(root), "clips")
    out, bad = [], []
    with open(tsv, encoding="utf-8", errors="replace", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, [])
        if "path" not in header or "sentence" not in header:
            raise DataError(f"{tsv}: header must name 'path' and 'sentence' columns, got {header[:6]}")
        i_path, i_text = header.index("path"), header.index("sentence")
        for n, row in enumerate(rows, 2):
            if len(row) <= max(i_path, i_text) or not row[i_path]:
                bad.append(f"{tsv}:{n}: too few columns")
                continue
            audio = os.path.join(clips, row[i_path])
            if not os.path.exists(audio) and not audio.endswith(".mp3") and os.path.exists(audio + ".mp3"):
                audio += ".mp3"  # early releases list clips without the extension
            out.append(Candidate(audio, row[i_text], f"{tsv}:{n}"))
    return out, bad


_HEADER_NAMES = {"audio", "audio_path", "audio_file", "path", "wav", "file", "filename"}


def _csv(path: str) -> tuple[list[Candidate], list[str]]:
    if not os.path.isfile(path):
        raise DataError(f"for csv, --root is the CSV file itself; {path} is not a file")
    base = os.path.dirname(os.path.abspath(path))
    out, bad = [], []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            if n == 1 and row[0].strip().lower() in _HEADER_NAMES:
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                bad.append(f"{path}:{n}: expected 'audio,transcript-file'")
                continue
            audio, text_file = (os.path.join(base, x.strip()) for x in row[:2])
            try:
                with open(text_file, encoding="utf-8", errors="replace") as t:
                    text = " ".join(t.read().split())
            except OSError as e:
                bad.append(f"{path}:{n}: cannot read transcript {text_file} ({e.strerror})")
                continue
            out.append(Candidate(audio, text, f"{path}:{n}"))
    return out, bad


# ---------------------------------------------------------------------------------------------- checking


def _check_one(c: Candidate, verify: bool) -> Entry | str:
    """An Entry, or the reason to skip ``c``."""
    text = normalize(c.text)
    if not text:
        return f"{c.source}: empty transcript after normalization ({c.text!r})"
    if not os.path.isfile(c.audio):
        return f"{c.source}: missing audio file {c.audio}"
    try:
        seconds = len(load_audio(c.audio)) / SAMPLE_RATE if verify else duration_seconds(c.audio)
    except (RnntError, RuntimeError, ValueError) as e:
        return f"{c.source}: unreadable audio {c.audio} ({e})"
    if not seconds > 0:
        return f"{c.source}: empty audio {c.audio}"
    return Entry(c.audio, text, seconds)


def _check(candidates: list[Candidate], workers: int, verify: bool,
           progress: Progress | None) -> tuple[list[Entry], list[str]]:
    """Normalize texts and measure durations (``workers`` threads); keeps the listing order."""
    entries, bad = [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, res in enumerate(pool.map(lambda c: _check_one(c, verify), candidates), 1):
            (entries if isinstance(res, Entry) else bad).append(res)
            if progress:
                progress(i, len(candidates))
    return entries, bad


# ---------------------------------------------------------------------------------------------- TED-LIUM

_MARKER = re.compile(r"^(<[^>]*>|\{[^}]*\}|\[[^\]]*\]|\([^)]*\))$")  # <unk>, {NOISE}, [laughter], (2)


def tedlium_text(text: str) -> str:
    """TED-LIUM transcript -> plain text: markers dropped, split contractions joined ("it 's" -> "it's")."""
    words = [w for w in text.split() if not _MARKER.match(w)]
    return re.sub(r" '(?=\w)", "'", " ".join(words))


def _stm_segments(stm: str) -> tuple[list[tuple[float, float, str, str]], list[str], int]:
    """(start, end, text, source) per scored segment, problems, and the count of ignored segments."""
    segs, bad, ignored = [], [], 0
    with open(stm, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.startswith(";;"):
                continue
            parts = line.split(None, 5)
            try:
                start, end = float(parts[3]), float(parts[4])
            except (IndexError, ValueError):
                bad.append(f"{stm}:{n}: not an stm line")
                continue
            rest = parts[5].strip() if len(parts) > 5 else ""
            if rest.startswith("<"):  # the optional <label> field
                rest = rest.split(">", 1)[1].strip() if ">" in rest else ""
            if rest == IGNORE_SEGMENT:
                ignored += 1
                continue
            segs.append((start, end, rest, f"{stm}:{n}"))
    return segs, bad, ignored


def _tedlium(root: str, seg_dir: str, progress: Progress | None) -> tuple[list[Entry], list[str], int]:
    stms = sorted(glob.glob(os.path.join(root, "stm", "*.stm")))
    if not stms:
        raise DataError(f"no stm/*.stm under {root}; point --root at a TED-LIUM split holding stm/ and sph/")
    entries, bad, ignored = [], [], 0
    for i, stm in enumerate(stms, 1):
        talk = os.path.splitext(os.path.basename(stm))[0]
        segs, problems, n_ignored = _stm_segments(stm)
        bad += problems
        ignored += n_ignored
        sph = os.path.join(root, "sph", talk + ".sph")
        try:
            samples = load_audio(sph) if segs else None
        except RnntError as e:
            bad += [f"{src}: unreadable talk audio ({e}; a shorten-compressed sph needs sph2pipe first)"
                    for *_, src in segs]
            segs = []
        for start, end, raw, src in segs:
            text = normalize(tedlium_text(raw))
            piece = samples[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
            if not text:
                bad.append(f"{src}: empty transcript after normalization ({raw!r})")
            elif len(piece) < MIN_SEGMENT_SECONDS * SAMPLE_RATE:
                bad.append(f"{src}: segment {start:.2f}-{end:.2f} s is empty or past the end of {sph}")
            else:
                path = os.path.join(seg_dir, talk, f"{talk}-{round(start * 100):07d}-{round(end * 100):07d}.wav")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_wav(path, piece)
                entries.append(Entry(path, text, len(piece) / SAMPLE_RATE))
        if progress:
            progress(i, len(stms))
    return entries, bad, ignored
