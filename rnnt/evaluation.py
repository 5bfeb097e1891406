"""Evaluate a recognizer on a manifest: WER (S/D/I), CER, real-time factor, per-utterance results."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from rnnt.audio import SAMPLE_RATE, load_audio
from rnnt.manifest import read_manifest
from rnnt.errors import DataError, RnntError
from rnnt.metrics import ErrorCounts, char_errors, word_errors
from rnnt.session import Recognizer


@dataclass
class EvalResult:
    wer: float
    cer: float
    rtf: float
    counts: ErrorCounts
    audio_seconds: float
    compute_seconds: float
    bad_lines: int
    failed: list[str] = field(default_factory=list)
    utterances: list[dict] = field(default_factory=list)
    group_by: str = ""  # the manifest field the groups come from ("" = no groups)
    groups: dict[str, dict] = field(default_factory=dict)  # value -> {"wer", "cer", S/D/I, words, utterances}

    def to_json(self) -> dict:
        c = self.counts
        extra = {"group_by": self.group_by, "groups": self.groups} if self.group_by else {}
        return {**extra, "wer": self.wer, "cer": self.cer, "rtf": self.rtf, "substitutions": c.substitutions,
                "deletions": c.deletions, "insertions": c.insertions, "reference_words": c.reference_length,
                "audio_seconds": self.audio_seconds, "compute_seconds": self.compute_seconds,
                "bad_manifest_lines": self.bad_lines, "failed": self.failed, "utterances": self.utterances}


def evaluate_manifest(recognizer: Recognizer, manifest: str, limit: int = 0,
                      progress: Callable[[int, int], None] | None = None, group_by: str = "") -> EvalResult:
    """Decode every utterance with the recognizer's streaming search; time only the decoding (not file I/O).

    ``group_by`` names a manifest field (e.g. ``voice``): the result then also holds WER and CER per value
    of it (lines without the field form the group ""), and each utterance records its value as ``group``."""
    report = read_manifest(manifest)
    entries = report.entries[:limit] if limit > 0 else report.entries
    if not entries:
        raise DataError(f"{manifest} has no usable lines ({report.bad_lines} bad)")
    words, chars = ErrorCounts(), ErrorCounts()
    audio_s = compute_s = 0.0
    utts, failed = [], []
    per_group: dict[str, tuple[ErrorCounts, ErrorCounts, int]] = {}
    for i, e in enumerate(entries):
        try:
            samples = load_audio(e.audio)
        except RnntError as err:
            failed.append(f"{e.audio}: {err}")
            continue
        t0 = time.perf_counter()
        hyp = recognizer.transcribe(samples)
        compute_s += time.perf_counter() - t0
        audio_s += len(samples) / SAMPLE_RATE
        w = word_errors(e.text, hyp)
        c = char_errors(e.text, hyp)
        words, chars = words + w, chars + c
        utts.append({"audio": e.audio, "ref": e.text, "hyp": hyp, "errors": w.errors, "ref_words": w.reference_length})
        if group_by:
            g = utts[-1]["group"] = e.tag(group_by)
            gw, gc, gn = per_group.get(g, (ErrorCounts(), ErrorCounts(), 0))
            per_group[g] = (gw + w, gc + c, gn + 1)
        if progress:
            progress(i + 1, len(entries))
    groups = {g: {"wer": gw.rate, "cer": gc.rate, "substitutions": gw.substitutions, "deletions": gw.deletions,
                  "insertions": gw.insertions, "reference_words": gw.reference_length, "utterances": gn}
              for g, (gw, gc, gn) in sorted(per_group.items())}
    return EvalResult(words.rate, chars.rate, compute_s / audio_s if audio_s else 0.0, words, audio_s, compute_s,
                      report.bad_lines, failed, utts, group_by, groups)
