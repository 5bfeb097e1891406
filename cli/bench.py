"""CPU benchmark: ``python -m cli.bench [--model M] [--manifest M] [--json OUT]``.

On the same audio: real-time factor of torch fp32, onnxruntime fp32 and onnxruntime int8 at one thread,
median and 95th-percentile compute per chunk, WER and token parity with torch, then how many real-time
streams ``--capacity_threads`` threads sustain when the encoder runs all streams as one batch. The ONNX
graphs are exported from ``--model`` into a temporary folder unless ``--onnx`` names an export folder.
"""

import os
import tempfile

import numpy as np
from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, output_file, run, write_json
from rnnt.audio import SAMPLE_RATE
from rnnt.config import DecodingConfig, to_dict

absl_flags.DEFINE_string("manifest", "", "JSONL manifest of the audio to time; empty = a few espeak-ng sentences")
absl_flags.DEFINE_integer("limit", 0, "use only the first N utterances of the manifest (0 = all)")
absl_flags.DEFINE_string("onnx", "", "ONNX export folder of --model (with int8/); empty = export to a temp folder")
absl_flags.DEFINE_string("json", "", "write the results to this JSON file")
absl_flags.DEFINE_integer("capacity_threads", 2, "threads for the multi-stream capacity test (0 = skip the test)")
absl_flags.DEFINE_float("capacity_seconds", 6.0, "seconds of audio each stream decodes in the capacity test")
absl_flags.DEFINE_integer("max_streams", 256, "most streams tried in the capacity test")
flags.define(DecodingConfig, extra=("model",))


def _onnx_folder(model, ckpt, out_dir: str) -> str:
    from export.onnx_export import export_onnx, quantize_int8

    export_onnx(model, ckpt.feature_config, ckpt.tokenizer, out_dir)
    quantize_int8(out_dir)
    return out_dir


def _backends(path: str, onnx_dir: str, tmp: str, threads: int) -> tuple[list[tuple[str, object]], object]:
    """[(name, backend)] for torch fp32, onnx fp32 and (when exported) onnx int8, and the tokenizer."""
    from rnnt.backend import TorchBackend
    from rnnt.checkpoint import load_model
    from rnnt.onnx_backend import OnnxBackend

    model, ckpt = load_model(path)
    onnx_dir = onnx_dir or _onnx_folder(model, ckpt, tmp)
    out = [("torch fp32", TorchBackend(model, ckpt.feature_config, threads)),
           ("onnx fp32", OnnxBackend.from_dir(onnx_dir, threads))]
    if os.path.isdir(os.path.join(onnx_dir, "int8")):
        out.append(("onnx int8", OnnxBackend.from_dir(onnx_dir, threads, int8=True)))
    return out, ckpt.tokenizer


def _table(rows: list[dict], capacity: dict) -> str:
    lines = [f"{'backend':<12}{'threads':>8}{'RTF':>9}{'CPU RTF':>9}{'chunk p50':>11}{'chunk p95':>11}{'WER':>9}"
             f"{'same tokens as torch':>22}"]
    for r in rows:
        wer = "-" if r["wer"] is None else f"{r['wer']:.2%}"
        same = f"{r['same_tokens_as_reference']}/{r['utterances']}"
        lines.append(f"{r['name']:<12}{r['threads']:>8}{r['rtf']:>9.4f}{r['cpu_rtf']:>9.4f}{r['chunk_ms_p50']:>9.2f}ms"
                     f"{r['chunk_ms_p95']:>9.2f}ms{wer:>9}{same:>22}")
    for name, n in capacity.get("streams", {}).items():
        lines.append(f"{name}: {n} real-time streams on {capacity['threads']} threads (batched encoder)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from rnnt.benchmark import (espeak_utterances, load_utterances, machine_info, stream_capacity, summarize,
                                time_streaming)
    from rnnt.data import read_manifest
    from rnnt.inference import resolve_lm
    from rnnt.session import Recognizer

    F = flags.FLAGS
    if F.json:
        output_file(F.json, "json")
    decoding, machine, model = flags.config_from_flags(DecodingConfig), machine_info(), model_path(F.model)
    utts = (load_utterances([(e.audio, e.text) for e in read_manifest(F.manifest).entries], F.limit)
            if F.manifest else espeak_utterances())
    with tempfile.TemporaryDirectory() as tmp:
        backends, tok = _backends(model, F.onnx, tmp, 1)
        decoding = resolve_lm(model, decoding, tok.sha1, tok.vocab_size)
        runs = [time_streaming(Recognizer(be, tok, decoding), utts, name, 1) for name, be in backends]
        capacity = {}
        if F.capacity_threads > 0:
            clip = np.concatenate([u.samples for u in utts])[: int(F.capacity_seconds * SAMPLE_RATE)]
            capacity = stream_capacity(_backends(model, F.onnx or tmp, tmp, F.capacity_threads)[0], decoding, clip,
                                       F.capacity_threads, F.max_streams)
    rows = summarize(runs, [u.text for u in utts])
    print(_table(rows, capacity))
    if F.json:
        write_json(F.json, {"model": model, "manifest": F.manifest or "espeak-ng sentences", "machine": machine,
                            "decoding": to_dict(decoding), "runs": rows, "capacity": capacity}, "json")
    return 0


if __name__ == "__main__":
    run(main)
