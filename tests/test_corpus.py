"""Tests for rnnt/corpus.py: text forms, sentence splits, engines, codecs and a tiny resumable corpus."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnt import corpus
from rnnt.audio import SAMPLE_RATE, duration_seconds, load_audio
from rnnt.corpus import CorpusConfig
from rnnt.errors import ConfigError
from rnnt.text import normalize

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_FLITE = shutil.which("flite") is not None
needs_tts = pytest.mark.skipif(not (HAVE_ESPEAK and HAVE_FLITE), reason="espeak-ng and flite are needed")


def tiny_config(out_dir, **kw) -> CorpusConfig:
    base = dict(out_dir=str(out_dir), num_sentences=8, heldout_sentences=4, dev_sentences=2,
                sources="fortunes,generated", test_voices="espeak_en-gb-scotland+m7,flite_rms",
                engine_weights="espeak=1,flite=1", codec_prob=0.3, workers=2, refresh_every=3, seed=5)
    base.update(kw)
    return CorpusConfig(**base)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("kw", [dict(test_voices="flite_rms"), dict(engine_weights="espeak=0"),
                                dict(engine_weights="espeak=x"), dict(engine_weights="nope=1"),
                                dict(dev_sentences=10, heldout_sentences=10), dict(sources="fortunes,web"),
                                dict(workers=0), dict(codec_prob=1.5), dict(train_order="random"),
                                dict(train_start=-2), dict(train_start=8), dict(voice_seed=-2),
                                dict(world_prob=1.5), dict(world_speakers=0), dict(world_engines="flite,nope"),
                                dict(world_warp=-0.1), dict(world_warp=0.5), dict(world_seed=-2),
                                dict(dectalk_speakers=-1)])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ConfigError):
        tiny_config("x", **kw)


def test_spoken_form_keeps_transcript_in_step():
    assert corpus.spoken_form("Collect $200!") == "Collect two hundred dollars!"
    assert corpus.spoken_form("See you at 10:42 am, said I.") == "See you at ten forty two A M, said I."
    for raw in ("Bank error in your favor.  Collect $200.", "It's 3:15 -- or is it?", "The 21st of May, 1999."):
        assert normalize(corpus.spoken_form(raw)) == normalize(raw)


def test_split_sentences_bounds_length():
    text = "Short one. " + ", ".join(["Word word word"] * 20) + ". Yes? No!"
    out = corpus.split_sentences(text, min_words=2, max_words=30)
    assert out[0] == "Short one."
    assert all(2 <= len(s.split()) <= 30 for s in out)
    assert "Yes?" not in out  # one word is too short


def test_is_speakable_drops_abbreviations_and_markup():
    vocab = corpus.load_vocabulary()
    for raw, ok in (("The cat sat on the mat.", True), ("Dr. Smith is in.", False),
                    ("See www.debian.org now.", False), ("It weighs 5 lbs.", False)):
        assert corpus.is_speakable(raw, normalize(corpus.spoken_form(raw)), vocab) is ok, raw


def test_generated_sentences_cover_numbers_and_letters():
    rng = np.random.default_rng(0)
    pairs = corpus.generated_sentences(rng, 300)
    texts = [normalize(spoken or corpus.spoken_form(raw)) for raw, spoken in pairs]
    assert all(texts) and len(set(texts)) > 250
    joined = " ".join(texts)
    for word in ("hundred", "dollars", "of", "percent"):
        assert word in joined.split()
    spelled = [s for _, s in pairs if s]
    assert spelled and all("," in s for s in spelled)


def test_build_sentences_disjoint(tmp_path):
    cfg = tiny_config(tmp_path, num_sentences=200, heldout_sentences=60, dev_sentences=20,
                      sources="fortunes,words,generated")
    sents = corpus.build_sentences(cfg)
    assert [len(sents[s]) for s in ("train", "dev", "test")] == [200, 20, 40]
    texts = {s: {x.text for x in v} for s, v in sents.items()}
    assert not texts["train"] & (texts["dev"] | texts["test"]) and not texts["dev"] & texts["test"]
    assert all(x.text == normalize(x.spoken) and 2 <= len(x.text.split()) <= 30 for v in sents.values() for x in v)
    assert corpus.build_sentences(cfg) == sents  # deterministic


def test_trim_silence_pads_both_ends():
    rng = np.random.default_rng(0)
    x = np.zeros(3 * SAMPLE_RATE, np.float32)
    x[SAMPLE_RATE: 2 * SAMPLE_RATE] = 0.5 * np.sin(np.arange(SAMPLE_RATE) * 0.3)
    y = corpus.trim_silence(x, rng)
    lead = np.flatnonzero(np.abs(y) > 0.01)[0] / SAMPLE_RATE
    assert 0.09 <= lead <= 0.31 and 1.19 <= len(y) / SAMPLE_RATE <= 1.62


@pytest.mark.parametrize("codec", ["mulaw", "gsm", "mp3", "opus"])
def test_codec_roundtrip(codec):
    x = (0.3 * np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 440 / SAMPLE_RATE)).astype(np.float32)
    y = corpus.codec_roundtrip(x, codec, np.random.default_rng(0))
    assert y.dtype == np.float32 and np.all(np.isfinite(y))
    assert abs(len(y) - len(x)) < 0.1 * SAMPLE_RATE and 0.1 < np.max(np.abs(y)) < 0.5


def _job(engine: str, ident: str) -> corpus.Job:
    return corpus.Job("train-000000", "train", corpus.Voice(f"{engine}_x", engine, ident), "Hello there, world.",
                      "hello there world", 1.0, 1.05, "", 3)


@pytest.mark.parametrize("engine,ident", [("festival", "kal_diphone"), ("piper", "joe"), ("kokoro", "jf_alpha"),
                                          ("dectalk", "[:np]")])
def test_optional_engines_render(engine, ident):
    if not corpus._probe(engine):
        pytest.skip(f"{engine} is not installed")
    y = corpus.render(_job(engine, ident))
    assert y.dtype == np.float32 and 0.5 < len(y) / SAMPLE_RATE < 4 and np.max(np.abs(y)) > 0.2


def test_dectalk_voices_are_fixed_designed_speakers():
    made = corpus.dectalk_voices(5, seed=3)
    assert made == corpus.dectalk_voices(5, seed=3)  # a speaker is the same in every run
    assert [v.name for v in made[:9]] == [f"dectalk_{n}" for n in corpus.DECTALK_VOICES]
    designed = made[9:]
    assert len(designed) == 8 * 5  # Wendy whispers: no speakers are designed from her
    assert not any(v.name.startswith("dectalk_wendy~") for v in designed)
    assert [v.name for v in designed[:5]] == [f"dectalk_paul~d{k}" for k in range(5)]
    assert all(v.engine == "dectalk" and v.ident.startswith("[:n") and "[:dv hs " in v.ident for v in designed)
    assert len({v.ident for v in designed}) == len(designed)
    sizes = [int(v.ident.split("hs ")[1].split()[0]) for v in designed]
    assert all(81 <= hs <= 123 for hs in sizes)
    paul = [v for v in designed if v.name.startswith("dectalk_paul~")]
    kit = [v for v in designed if v.name.startswith("dectalk_kit~")]
    assert max(v.pitch_hz for v in paul) < min(v.pitch_hz for v in kit)  # a child stays higher than a man
    assert corpus.dectalk_voices(9, seed=3)[9:14] == designed[:5]  # more speakers repeat the first ones
    assert corpus.dectalk_voices(5, seed=4)[9:] != designed
    other = corpus.dectalk_voices(5, seed=3, dectalk_seed=2)[9:]  # a set of its own, named apart
    assert [v.name for v in other[:2]] == ["dectalk_paul~s2d0", "dectalk_paul~s2d1"]
    assert not {v.ident for v in other} & {v.ident for v in designed}
    assert corpus.dectalk_voices(5, seed=9, dectalk_seed=2)[9:] == other  # seed no longer matters
    wide = corpus.dectalk_voices(5, seed=3, spread=1.5)[9:]  # the same draws, spread 1.5x wider
    assert [v.name for v in wide] == [v.name for v in designed]
    for a, b in zip(designed, wide):
        ha, hb = (math.log(int(v.ident.split("hs ")[1].split()[0]) / 100) for v in (a, b))
        assert hb == pytest.approx(1.5 * ha, abs=0.015)  # log head size 1.5x as far from 100%
        assert a.ident.split(" pr ")[1] == b.ident.split(" pr ")[1]  # the other parameters as they were
    with pytest.raises(ConfigError, match="dectalk_spread"):
        corpus.CorpusConfig(out_dir="x", dectalk_spread=0)


def test_dectalk_speaker_pitch_reaches_the_audio():
    if not corpus._probe("dectalk"):
        pytest.skip("dectalk is not installed")
    pw = corpus._pyworld()
    low = corpus.Voice("dectalk_a", "dectalk", "[:np]", pitch_hz=100.0)
    high = corpus.Voice("dectalk_b", "dectalk", "[:np][:dv hs 85]", pitch_hz=200.0)  # a designed speaker

    def median_f0(voice):
        y = corpus.render(dataclasses.replace(_job("dectalk", ""), voice=voice, pitch=1.0))
        f0, _ = pw.dio(y.astype(np.float64), SAMPLE_RATE)
        return float(np.median(f0[f0 > 0]))

    assert median_f0(high) / median_f0(low) == pytest.approx(2.0, rel=0.15)


def test_kokoro_phonemes_use_misaki_symbols():
    pytest.importorskip("piper")
    corpus._kokoro_state() if corpus._probe("kokoro") else pytest.skip("kokoro is not installed")
    ps = corpus.kokoro_phonemes("I know, right?")
    assert "I" in ps and "O" in ps and "," in ps and ps.endswith("?") and "ː" not in ps


@needs_tts
def test_tiny_corpus_manifests_heldout_and_resume(tmp_path):
    cfg = tiny_config(tmp_path)
    corpus.synthesize_corpus(cfg, progress=False)
    man = {s: read_jsonl(tmp_path / f"{s}.jsonl") for s in ("train", "dev", "test")}
    assert [len(man[s]) for s in ("train", "dev", "test")] == [8, 2, 2]
    test_voices = set(cfg.test_voice_names())
    assert {r["voice"] for r in man["test"]} <= test_voices
    assert not {r["voice"] for r in man["train"] + man["dev"]} & test_voices
    heldout = {r["text"] for r in man["dev"] + man["test"]}
    assert not heldout & {r["text"] for r in man["train"]}
    for r in man["train"] + man["dev"] + man["test"]:
        assert set(r) == {"audio", "text", "duration", "voice"} and r["text"] == normalize(r["text"])
        path = tmp_path / r["audio"]
        assert path.is_file() and r["audio"].startswith(f"audio/{r['voice']}/")
        assert duration_seconds(str(path)) == pytest.approx(r["duration"], abs=1e-3)
        assert 0.3 < r["duration"] < 20 and np.max(np.abs(load_audio(str(path)))) > 0.05

    mtimes = {p: os.path.getmtime(p) for p in tmp_path.glob("audio/*/*.flac")}
    lines = len(read_jsonl(tmp_path / "records.jsonl"))
    corpus.synthesize_corpus(cfg, progress=False)  # resume: nothing new
    assert len(read_jsonl(tmp_path / "records.jsonl")) == lines
    assert {p: os.path.getmtime(p) for p in tmp_path.glob("audio/*/*.flac")} == mtimes

    os.remove(tmp_path / man["train"][3]["audio"])  # a lost file is made again, and only it
    corpus.synthesize_corpus(cfg, progress=False)
    assert len(read_jsonl(tmp_path / "records.jsonl")) == lines + 1
    assert read_jsonl(tmp_path / "train.jsonl") == man["train"]


def test_backward_order_synthesizes_the_last_training_jobs_first(tmp_path):
    cfg = tiny_config(tmp_path, workers=1, max_hours=1e-6, train_order="backward")
    corpus.synthesize_corpus(cfg, progress=False)  # stops soon after the first training utterance
    ids = [r["id"] for r in read_jsonl(tmp_path / "records.jsonl")]
    train = sorted(i for i in ids if i.startswith("train-"))
    assert {"dev-000000", "dev-000001", "test-000000", "test-000001"} <= set(ids)
    assert train and len(train) < 8 and train == [f"train-{i:06d}" for i in range(8 - len(train), 8)], ids
    corpus.synthesize_corpus(dataclasses.replace(cfg, max_hours=0.0, train_order="forward"), progress=False)
    man = read_jsonl(tmp_path / "train.jsonl")  # finished either way: the same corpus, listed in job order
    assert [os.path.basename(r["audio"]) for r in man] == [f"train-{i:06d}.flac" for i in range(8)]


@pytest.mark.parametrize("order,start", [("forward", 5), ("backward", 2), ("backward", 0)])
def test_train_start_picks_the_first_training_job(tmp_path, order, start):
    cfg = tiny_config(tmp_path, workers=1, max_hours=1e-6, train_order=order, train_start=start)
    corpus.synthesize_corpus(cfg, progress=False)  # stops soon after the first training utterance
    train = [r["id"] for r in read_jsonl(tmp_path / "records.jsonl") if r["id"].startswith("train-")]
    step = 1 if order == "forward" else -1
    assert train and len(train) < 8 and train == [f"train-{(start + step * k) % 8:06d}" for k in range(len(train))]


def _start_make_corpus(cfg: CorpusConfig) -> subprocess.Popen:
    """``python -m cli.make_corpus`` for ``cfg`` in a new session; returns once 4 utterances are done."""
    flags = [f"--{k}={v}" for k, v in dataclasses.asdict(cfg).items()]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "cli.make_corpus", *flags], cwd=repo, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    records, deadline = os.path.join(cfg.out_dir, "records.jsonl"), time.monotonic() + 120
    while not (os.path.exists(records) and len(read_jsonl(records)) >= 4):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


def _finish(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("make_corpus hung")


def _assert_manifests_list_every_record(out_dir) -> None:
    done = {r["audio"] for r in read_jsonl(out_dir / "records.jsonl")}
    listed = {r["audio"] for s in ("train", "dev", "test") for r in read_jsonl(out_dir / f"{s}.jsonl")}
    assert 4 <= len(listed) < 44 and listed == done


@needs_tts
def test_sigterm_to_every_process_keeps_all_finished_work(tmp_path):
    """``pkill -f cli.make_corpus`` signals the driver and its workers at once. With a multiprocessing
    pool this sometimes hung the driver (a worker killed while holding the task queue's lock) before the
    manifests were rewritten; manifest rewrites every 3 utterances leave workers idle often, the risky moment."""
    cfg = tiny_config(tmp_path, num_sentences=40, refresh_every=3)
    proc = _start_make_corpus(cfg)
    os.killpg(proc.pid, signal.SIGTERM)  # the driver, its workers and their TTS processes
    err = _finish(proc)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().endswith("interrupted"), err
    _assert_manifests_list_every_record(tmp_path)
    corpus.synthesize_corpus(cfg, progress=False)  # resume to the end
    assert [len(read_jsonl(tmp_path / f"{s}.jsonl")) for s in ("train", "dev", "test")] == [40, 2, 2]


@needs_tts
def test_a_worker_killed_alone_is_a_one_line_error(tmp_path):
    proc = _start_make_corpus(tiny_config(tmp_path, num_sentences=40))
    children = [int(pid) for task in os.listdir(f"/proc/{proc.pid}/task")
                for pid in open(f"/proc/{proc.pid}/task/{task}/children").read().split()]
    workers = [pid for pid in children if b"cli.make_corpus" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert workers, children
    os.kill(workers[0], signal.SIGKILL)  # as the kernel's out-of-memory killer would
    err = _finish(proc)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: a synthesis process died"), err
    _assert_manifests_list_every_record(tmp_path)


@needs_tts
def test_changed_text_settings_need_new_out_dir(tmp_path):
    cfg = tiny_config(tmp_path, num_sentences=3, heldout_sentences=2, dev_sentences=1)
    corpus.prepare(cfg)
    with pytest.raises(ConfigError, match="new out_dir"):
        corpus.prepare(dataclasses.replace(cfg, num_sentences=4))


@needs_tts
def test_voice_seed_rereads_the_training_sentences_with_new_voices(tmp_path):
    cfg = tiny_config(tmp_path / "a", num_sentences=24)
    first = corpus.prepare(cfg)
    again = corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "b"), voice_seed=7))
    assert again == corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "b"), voice_seed=7))
    held = [j for j in first if j.split != "train"]
    assert held and held == [j for j in again if j.split != "train"]  # dev and test stay as they were
    old = [j for j in first if j.split == "train"]
    new = [j for j in again if j.split == "train"]
    assert [(j.id, j.text) for j in old] == [(j.id, j.text) for j in new]
    assert sum(a.voice != b.voice for a, b in zip(old, new)) >= 6  # 2 engines, ~100 voices: most change
    assert all(a.rate != b.rate and a.seed != b.seed for a, b in zip(old, new))
    with pytest.raises(ConfigError, match="different voice_seed"):  # one out_dir holds one reading
        corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "b")))


@needs_tts
def test_unknown_test_voice_is_a_config_error(tmp_path):
    cfg = tiny_config(tmp_path, test_voices="espeak_en-us,flite_nobody", num_sentences=3, heldout_sentences=2,
                      dev_sentences=1)
    with pytest.raises(ConfigError, match="flite_nobody"):
        corpus.prepare(cfg)


def test_world_voices_are_fixed_speakers_of_their_base_voice():
    base = corpus.Voice("flite_awb", "flite", "awb")
    made = corpus.world_voices(base, 6, seed=3)
    assert made == corpus.world_voices(base, 6, seed=3)  # a speaker is the same in every run
    assert [v.name for v in made] == [f"flite_awb~w{k}" for k in range(6)]
    assert all(v.engine == "flite" and v.ident == "awb" for v in made)
    assert len({v.world for v in made}) == 6
    assert all(0.6 < f0 < 1.6 and 0.85 < warp < 1.17 for f0, warp in (v.world for v in made))
    assert made != corpus.world_voices(corpus.Voice("flite_slt", "flite", "slt"), 6, seed=3)
    wide = corpus.world_voices(base, 6, seed=3, warp_range=0.28)  # the same sizes, twice the log-warp
    assert all(abs(np.log(w2) - 2 * np.log(w1)) < 1e-3 for (_, w1), (_, w2) in zip((v.world for v in made),
                                                                                 (v.world for v in wide)))
    assert corpus.world_voices(base, 12, seed=3)[:6] == made  # more speakers repeat the first ones
    other = corpus.world_voices(base, 6, seed=3, world_seed=9)  # a set of its own, under its own names
    assert [v.name for v in other] == [f"flite_awb~s9w{k}" for k in range(6)]
    assert not {v.world for v in other} & {v.world for v in made}
    assert other == corpus.world_voices(base, 6, seed=3, world_seed=9)
    assert other != corpus.world_voices(base, 6, seed=3, world_seed=10)


def test_world_convert_moves_pitch_and_keeps_the_length():
    pw = corpus._pyworld()
    sr = SAMPLE_RATE
    t = np.arange(int(1.5 * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 1.5 * t)  # a gliding voiced tone with harmonics, like a vowel
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 20)).astype(np.float32) * 0.2

    def median_f0(s):
        est, _ = pw.dio(s.astype(np.float64), sr)
        return float(np.median(est[est > 0]))

    y = corpus.world_convert(x, sr, 1.3, 1.0)
    assert abs(len(y) - len(x)) <= sr // 100
    assert median_f0(y) / median_f0(x) == pytest.approx(1.3, rel=0.05)
    z = corpus.world_convert(x, sr, 1.0, 1.15)  # envelope warp alone leaves the pitch where it was
    assert median_f0(z) / median_f0(x) == pytest.approx(1.0, rel=0.05)
    spec = lambda s: np.abs(np.fft.rfft(s[: sr]))  # noqa: E731
    centroid = lambda s: float((spec(s) * np.arange(len(spec(s)))).sum() / spec(s).sum())  # noqa: E731
    assert centroid(z) > centroid(x) * 1.05  # formants up: energy moves to higher frequencies


@needs_tts
def test_world_prob_gives_training_jobs_to_converted_speakers(tmp_path):
    cfg = tiny_config(tmp_path / "a", num_sentences=40)
    plain = corpus.prepare(cfg)
    assert not any("~w" in j.voice.name for j in plain)
    conv = corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "b"), world_prob=0.6,
                                              world_engines="flite", world_speakers=3))
    assert [j for j in plain if j.split != "train"] == [j for j in conv if j.split != "train"]
    train = [j for j in conv if j.split == "train"]
    flite = [j for j in train if j.voice.engine == "flite"]
    converted = [j for j in flite if j.voice.world]
    assert 0 < len(converted) < len(flite)
    assert all(j.voice.name.split("~w")[0] in ("flite_kal16", "flite_awb", "flite_slt") for j in converted)
    assert not any(j.voice.world for j in train if j.voice.engine == "espeak")
    with pytest.raises(ConfigError, match="different world_prob"):  # one out_dir holds one reading
        corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "b"), world_engines="flite",
                                           world_speakers=3))
    with pytest.raises(ConfigError, match="different world_seed"):
        corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "b"), world_prob=0.6,
                                           world_engines="flite", world_speakers=3, world_seed=2))
    own = corpus.prepare(dataclasses.replace(cfg, out_dir=str(tmp_path / "c"), world_prob=0.6,
                                             world_engines="flite", world_speakers=3, world_seed=2))
    assert [(j.id, j.voice.name.replace("~s2w", "~w")) for j in own] == [(j.id, j.voice.name) for j in conv]
    assert {j.voice.world for j in own if j.voice.world}.isdisjoint({j.voice.world for j in converted})
    audio = corpus.render(converted[0])  # end to end: engine, conversion, trimming, level
    assert len(audio) > SAMPLE_RATE // 2 and 0.25 < float(np.max(np.abs(audio))) <= 0.9
