"""JSON-lines manifests: read (bad lines skipped and counted) and write. No torch needed.

Manifest: one JSON object a line, ``{"audio": path relative to the manifest or absolute, "text": "...",
"duration": seconds (optional)}``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Iterable

from rnnt.audio import duration_seconds
from rnnt.errors import DataError, RnntError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    audio: str  # absolute path
    text: str
    duration: float  # seconds; -1 when unknown and not measured
    tags: tuple[tuple[str, str], ...] = ()  # the line's other string fields (e.g. "voice"), as (key, value)

    def tag(self, key: str) -> str:
        """The line's string field ``key``, or "" when it has none."""
        return dict(self.tags).get(key, "")


@dataclass(frozen=True)
class ManifestReport:
    entries: list[Entry]
    bad_lines: int
    bad_examples: list[str]


def read_manifest(path: str, measure: bool = False) -> ManifestReport:
    """Parse a JSONL manifest. Lines that are not JSON objects with ``audio`` and ``text`` strings are
    skipped and counted. ``measure`` reads the duration of entries that lack it."""
    if not os.path.isfile(path):
        raise DataError(f"manifest not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    entries, bad, examples = [], 0, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                audio, text = d["audio"], d["text"]
                if not isinstance(audio, str) or not isinstance(text, str) or not audio:
                    raise ValueError("audio and text must be strings")
                dur = float(d.get("duration", -1.0))
                audio = audio if os.path.isabs(audio) else os.path.join(base, audio)
                if measure and dur < 0:
                    dur = duration_seconds(audio)
                tags = tuple((k, v) for k, v in d.items()
                             if k not in ("audio", "text", "duration") and isinstance(v, str))
                entries.append(Entry(audio, text, dur, tags))
            except (ValueError, KeyError, TypeError, RnntError) as e:
                bad += 1
                if len(examples) < 5:
                    examples.append(f"{path}:{lineno}: {type(e).__name__}: {e}")
    if bad:
        log.warning("%s: skipped %d bad manifest line(s), e.g. %s", path, bad, examples[0])
    return ManifestReport(entries, bad, examples)


def write_text_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, then a rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_manifest(path: str, entries: Iterable[Entry]) -> int:
    """Write ``entries`` as JSON lines (atomically); returns the count.

    Audio paths inside the manifest's folder are stored relative to it (the tree can move), others
    absolute. Durations are rounded to milliseconds.
    """
    base = os.path.dirname(os.path.abspath(path))
    os.makedirs(base, exist_ok=True)
    tmp, n = f"{path}.tmp{os.getpid()}", 0
    with open(tmp, "w", encoding="utf-8") as f:
        for e in entries:
            audio = os.path.abspath(e.audio)
            rel = os.path.relpath(audio, base)
            line = {"audio": audio if rel.startswith(os.pardir) else rel, "text": e.text,
                    "duration": round(e.duration, 3)}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_manifests(paths: str, measure: bool = False) -> ManifestReport:
    """Comma-separated manifest paths, concatenated."""
    reports = [read_manifest(p.strip(), measure) for p in paths.split(",") if p.strip()]
    if not reports:
        raise DataError("no manifest given")
    return ManifestReport([e for r in reports for e in r.entries], sum(r.bad_lines for r in reports),
                          [x for r in reports for x in r.bad_examples][:5])
