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
    decoding = DecodingConfig()
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
