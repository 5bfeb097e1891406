"""cli.prepare / rnnt.prepare on tiny trees built here in each corpus's exact layout (espeak-ng clips)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from rnnt.audio import SAMPLE_RATE, load_audio
from rnnt.data import read_manifest
from rnnt.errors import ConfigError, DataError
from rnnt.prepare import prepare, tedlium_text
from tests.conftest import REPO, espeak


def _speech(tmp_path, text: str) -> np.ndarray:
    """espeak-ng ``text`` as 16 kHz float32 samples."""
    wav = str(tmp_path / "tts.wav")
    espeak(text, wav)
    return load_audio(wav)


def _by_text(manifest: str) -> dict:
    report = read_manifest(manifest)
    assert report.bad_lines == 0
    return {e.text: e for e in report.entries}


def test_librispeech_layout(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "train-clean-100" / "19" / "198"
    chapter.mkdir(parents=True)
    texts = {"19-198-0001": "NORTHANGER ABBEY", "19-198-0002": "IT IS RAINING TODAY", "19-198-0003": "NO AUDIO HERE",
             "19-198-0004": "A BROKEN FILE"}
    for utt in ("19-198-0001", "19-198-0002"):
        sf.write(str(chapter / f"{utt}.flac"), _speech(tmp_path, texts[utt].lower()), SAMPLE_RATE)
    (chapter / "19-198-0004.flac").write_bytes(b"not a flac file at all" * 10)
    (chapter / "19-198.trans.txt").write_text("".join(f"{k} {v}\n" for k, v in texts.items()))
    out = str(tmp_path / "manifests" / "train-clean-100.jsonl")

    report = prepare("librispeech", str(tmp_path / "LibriSpeech" / "train-clean-100"), out)

    assert report.entries == 2
    entries = _by_text(out)
    assert set(entries) == {"northanger abbey", "it is raining today"}
    for e in entries.values():
        assert e.audio.endswith(".flac") and os.path.isfile(e.audio)
        assert abs(e.duration - len(load_audio(e.audio)) / SAMPLE_RATE) < 0.01
    assert len(report.skipped) == 2
    assert any("missing audio" in s and "19-198-0003" in s for s in report.skipped)
    assert any("unreadable audio" in s and "19-198-0004" in s for s in report.skipped)


def test_commonvoice_layout(tmp_path):
    root = tmp_path / "cv-corpus-17.0" / "en"
    (root / "clips").mkdir(parents=True)
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\n"
    rows = {"train": [("common_voice_en_1.mp3", "Open the door, please!"), ("common_voice_en_2.mp3", "I have 2 cats.")],
            "dev": [("common_voice_en_3.mp3", 'She said "stop the music".'), ("common_voice_en_9.mp3", "missing clip")],
            "test": [("common_voice_en_4.mp3", "...")]}
    for split, items in rows.items():
        lines = [f"abc{i}\t{path}\tsid{i}\t{text}\t\t2\t0\t\t\t\n" for i, (path, text) in enumerate(items)]
        (root / f"{split}.tsv").write_text(header + "".join(lines))
    for name, text in [("common_voice_en_1.mp3", "open the door please"), ("common_voice_en_2.mp3", "i have two cats"),
                       ("common_voice_en_3.mp3", "stop the music"), ("common_voice_en_4.mp3", "hello")]:
        sf.write(str(root / "clips" / name), _speech(tmp_path, text), SAMPLE_RATE, format="MP3")

    train = prepare("commonvoice", str(root), str(tmp_path / "cv_train.jsonl"), split="train")
    assert train.entries == 2 and not train.skipped
    entries = _by_text(str(tmp_path / "cv_train.jsonl"))
    assert set(entries) == {"open the door please", "i have two cats"}
    assert all(0.5 < e.duration < 5 for e in entries.values())

    dev = prepare("commonvoice", str(root), str(tmp_path / "cv_dev.jsonl"), split="dev")
    assert dev.entries == 1 and len(dev.skipped) == 1 and "missing audio" in dev.skipped[0]
    assert set(_by_text(str(tmp_path / "cv_dev.jsonl"))) == {"she said stop the music"}

    with pytest.raises(DataError, match="empty transcript"):  # the only test item has no words
        prepare("commonvoice", str(root), str(tmp_path / "cv_test.jsonl"), split="test")
    with pytest.raises(DataError, match="splits here: dev, test, train"):
        prepare("commonvoice", str(root), str(tmp_path / "x.jsonl"), split="validated")


def test_tedlium_layout_cuts_segments(tmp_path):
    root = tmp_path / "TEDLIUM_release-3" / "legacy" / "train"
    (root / "stm").mkdir(parents=True)
    (root / "sph").mkdir()
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    parts, spans, t = [], [], 0.5
    for text in ("it is a good day", "we need more time"):
        speech = _speech(tmp_path, text)
        parts += [gap, speech]
        spans.append((t, t + len(speech) / SAMPLE_RATE))
        t += len(speech) / SAMPLE_RATE + 0.5
    talk = np.concatenate(parts + [gap])
    sf.write(str(root / "sph" / "JaneDoe_2010.sph"), talk, SAMPLE_RATE, format="NIST", subtype="PCM_16")
    total = len(talk) / SAMPLE_RATE
    (root / "stm" / "JaneDoe_2010.stm").write_text(
        f"JaneDoe_2010 1 JaneDoe_2010 0.00 0.50 <o,f0,female> ignore_time_segment_in_scoring\n"
        f"JaneDoe_2010 1 JaneDoe_2010 {spans[0][0]:.2f} {spans[0][1]:.2f} <o,f0,female> it 's a good day <unk>\n"
        f"JaneDoe_2010 1 JaneDoe_2010 {spans[1][0]:.2f} {spans[1][1]:.2f} <o,f0,female> we need more time\n"
        f"JaneDoe_2010 1 JaneDoe_2010 {total + 5:.2f} {total + 8:.2f} <o,f0,female> past the end\n")
    (root / "stm" / "NoAudio_2011.stm").write_text("NoAudio_2011 1 NoAudio_2011 1.00 2.00 <o,f0,male> hello\n")
    out = str(tmp_path / "ted" / "train.jsonl")

    report = prepare("tedlium", str(root), out)

    assert report.entries == 2 and report.ignored == 1
    entries = _by_text(out)
    assert set(entries) == {"it's a good day", "we need more time"}
    for (start, end), e in zip(spans, [entries["it's a good day"], entries["we need more time"]]):
        assert e.audio.startswith(str(tmp_path / "ted" / "train_segments" / "JaneDoe_2010"))
        assert abs(e.duration - (round(end, 2) - round(start, 2))) < 0.01
        assert abs(len(load_audio(e.audio)) / SAMPLE_RATE - e.duration) < 0.01
    assert len(report.skipped) == 2
    assert any("past the end" in s for s in report.skipped)
    assert any("NoAudio_2011" in s and "unreadable talk audio" in s for s in report.skipped)


def test_tedlium_text_cleanup():
    assert tedlium_text("i 'm here {NOISE} and it 's <unk> fine (2)") == "i'm here and it's fine"


def test_csv_pairs(tmp_path):
    (tmp_path / "audio").mkdir()
    (tmp_path / "text").mkdir()
    sf.write(str(tmp_path / "audio" / "a.wav"), _speech(tmp_path, "call me tomorrow"), SAMPLE_RATE)
    (tmp_path / "text" / "a.txt").write_text("Call me\ntomorrow.\n")
    (tmp_path / "text" / "b.txt").write_text("no audio for this one")
    (tmp_path / "pairs.csv").write_text("audio,transcript\naudio/a.wav,text/a.txt\naudio/b.wav,text/b.txt\n"
                                        "audio/a.wav,text/missing.txt\njust-one-column\n")
    out = str(tmp_path / "mine.jsonl")

    report = prepare("csv", str(tmp_path / "pairs.csv"), out)

    assert report.entries == 1
    assert set(_by_text(out)) == {"call me tomorrow"}
    assert len(report.skipped) == 3
    assert any("missing audio" in s for s in report.skipped)
    assert any("cannot read transcript" in s for s in report.skipped)
    assert any("expected 'audio,transcript-file'" in s for s in report.skipped)
    with open(out) as f:
        assert '"audio": "audio/a.wav"' in f.read()  # stored relative to the manifest


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        prepare("timit", str(tmp_path), str(tmp_path / "x.jsonl"))
    with pytest.raises(DataError, match="does not exist"):
        prepare("librispeech", str(tmp_path / "nowhere"), str(tmp_path / "x.jsonl"))
    with pytest.raises(DataError, match="no \\*.trans.txt"):
        prepare("librispeech", str(tmp_path), str(tmp_path / "x.jsonl"))


def test_cli(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121"
    chapter.mkdir(parents=True)
    sf.write(str(chapter / "84-121-0000.flac"), _speech(tmp_path, "go forward ten meters"), SAMPLE_RATE)
    (chapter / "84-121.trans.txt").write_text("84-121-0000 GO FORWARD TEN METERS\n84-121-0001 GONE\n")
    out = tmp_path / "dev.jsonl"
    proc = subprocess.run([sys.executable, "-m", "cli.prepare", "librispeech", f"--root={tmp_path / 'LibriSpeech'}",
                           f"--out={out}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {out}: 1 utterances" in proc.stdout
    assert "skipped 1 item(s)" in proc.stdout and "84-121-0001" in (tmp_path / "dev.jsonl.skipped.txt").read_text()

    proc = subprocess.run([sys.executable, "-m", "cli.prepare", "--root=x", f"--out={out}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("error: name one dataset")
