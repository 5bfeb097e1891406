"""Benchmark helpers and ``cli.bench``: timings are recorded, batched streams decode like single ones."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rnnt.audio import SAMPLE_RATE, load_audio
from rnnt.benchmark import Clip, decode_streams_batched, max_realtime_streams, summarize, time_streaming
from rnnt.config import DecodingConfig
from rnnt.inference import load_recognizer
from rnnt.session import Recognizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _utterances(manifest: str, n: int) -> list[Clip]:
    base = os.path.dirname(manifest)
    lines = [json.loads(line) for line in open(manifest)][:n]
    return [Clip(load_audio(os.path.join(base, d["audio"])), d["text"]) for d in lines]


def test_time_streaming_records_chunks_and_tokens(random_model, tiny_corpus):
    utts = _utterances(tiny_corpus, 2)
    rec = load_recognizer(random_model, "torch", 1)
    a = time_streaming(rec, utts, "torch", 1)
    b = time_streaming(rec, utts, "again", 1, warmup=False)
    assert a.tokens == b.tokens and len(a.tokens) == 2
    assert a.audio_seconds == pytest.approx(sum(len(u.samples) for u in utts) / SAMPLE_RATE)
    assert len(a.chunk_seconds) >= a.audio_seconds / 0.16 and 0 < a.rtf
    assert a.chunk_ms(50) <= a.chunk_ms(95)
    rows = summarize([a, b], [u.text for u in utts])
    assert rows[1]["same_tokens_as_reference"] == 2 and rows[0]["wer"] is not None


def test_batched_streams_decode_like_single_streams(random_model, tiny_corpus):
    rec = load_recognizer(random_model, "torch", 1)
    x = np.concatenate([u.samples for u in _utterances(tiny_corpus, 2)])
    audios = [np.roll(x, 2000 * i) for i in range(3)]
    decoding = DecodingConfig(beam=1, lm="")  # the batched capacity benchmark searches greedily
    seconds, hyps = decode_streams_batched(rec.backend, decoding, audios)
    assert seconds > 0
    piece = decoding.chunk_frames * 4 * 160
    for a, hyp in zip(audios, hyps):
        s = Recognizer(rec.backend, rec.tokenizer, decoding).create_stream()
        toks = [t.id for i in range(0, len(a), piece) for t in s.accept(a[i : i + piece])]
        assert hyp.tokens == toks
    n, trials = max_realtime_streams(rec.backend, decoding, x[: SAMPLE_RATE], max_streams=2)
    assert 0 <= n <= 2 and 1 in trials


def test_bench_cli_prints_table_and_json(tiny_model, tiny_corpus, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "cli.bench", f"--model={tiny_model}", f"--manifest={tiny_corpus}",
                           "--limit=3", "--capacity_seconds=1", "--max_streams=2", f"--json={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("torch fp32", "onnx fp32", "onnx int8"):
        assert name in proc.stdout
    res = json.load(open(out))
    rows = {r["name"]: r for r in res["runs"]}
    assert rows["onnx fp32"]["same_tokens_as_reference"] == 3
    assert all(r["rtf"] > 0 and r["cpu_rtf"] > 0 and r["chunk_ms_p95"] >= r["chunk_ms_p50"] for r in rows.values())
    assert set(res["capacity"]["streams"]) == set(rows) and res["capacity"]["threads"] == 2


def test_voice_gap_groups_voices_and_identity_warp_changes_nothing(tiny_model, tiny_corpus, tmp_path):
    """benchmarks/voice_gap.py pools espeak-ng voices, keeps others apart, and a warp factor of 1 is the
    clean loss while a real warp moves it."""
    base = os.path.dirname(tiny_corpus)
    lines = [json.loads(line) for line in open(tiny_corpus)][:8]
    voices = ["espeak_en-us", "espeak_en-gb", "flite_kal", "flite_kal"] * 2
    manifest = tmp_path / "voiced.jsonl"
    with open(manifest, "w") as f:
        for d, v in zip(lines, voices):
            f.write(json.dumps({**d, "audio": os.path.join(base, d["audio"]), "voice": v}) + "\n")
    proc = subprocess.run([sys.executable, "benchmarks/voice_gap.py", f"--model={tiny_model}",
                           f"--manifest={manifest}", "--per_voice=3", "--warps=1.0,1.25"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {ln.split()[0]: ln.split()[1:] for ln in proc.stdout.splitlines()[1:]}
    assert set(rows) == {"espeak*", "flite_kal"}
    for name, cols in rows.items():
        n, clean, vtlp1, vtlp125, fw1, fw125 = int(cols[0]), *map(float, cols[1:])
        assert n == 3 and 0 < clean
        assert vtlp1 == pytest.approx(clean, abs=2e-3) and fw1 == pytest.approx(clean, abs=2e-3)
        assert vtlp125 != pytest.approx(clean, abs=2e-3) and fw125 != pytest.approx(clean, abs=2e-3)
