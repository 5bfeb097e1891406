"""Score a model on a manifest: ``python -m cli.evaluate --manifest M [--model P] [--backend torch|onnx] --json OUT``.

Prints WER (substitutions, deletions, insertions), CER and the real-time factor of streaming decoding
(beam search with the model's language model unless ``--beam=1 --lm=`` asks for greedy); ``--json``
writes ``{"wer", "rtf", "utterances": [{"audio", "ref", "hyp"}], "decoding": {...}, ...}``.
``--group_by=voice`` also scores each value of that manifest field apart (a line per voice, and
``"groups"`` in the JSON).
"""

from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, output_file, run, write_json
from rnnt.config import DecodingConfig, to_dict

absl_flags.DEFINE_string("manifest", None, "JSONL manifest to score (audio, text)")
absl_flags.DEFINE_string("json", "", "write the full result (per-utterance hypotheses) to this file")
absl_flags.DEFINE_integer("limit", 0, "score only the first N utterances (0 = all)")
absl_flags.DEFINE_string("group_by", "", "also score each value of this manifest field apart, e.g. voice "
                         "(the synthetic corpus's manifests name each line's voice)")
flags.define(DecodingConfig, extra=("model", "backend", "threads"))
absl_flags.mark_flag_as_required("manifest")


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    from rnnt.evaluation import evaluate_manifest
    from rnnt.inference import load_recognizer

    F = flags.FLAGS
    if F.json:
        output_file(F.json, "json")
    rec = load_recognizer(model_path(F.model, F.backend), F.backend, F.threads, flags.config_from_flags(DecodingConfig))
    with tqdm(desc="evaluate", unit="utt", disable=None) as bar:
        res = evaluate_manifest(rec, F.manifest, F.limit, lambda i, n: (setattr(bar, "total", n), bar.update(1)),
                                F.group_by)
    c = res.counts
    print(f"WER {res.wer:.2%} (S {c.substitutions} D {c.deletions} I {c.insertions} / {c.reference_length} words)  "
          f"CER {res.cer:.2%}  RTF {res.rtf:.4f}  ({len(res.utterances)} utterances, {res.audio_seconds:.1f} s; "
          f"{rec.decoding.describe()})")
    for g, r in res.groups.items():
        print(f"  {F.group_by}={g or '(none)'}: WER {r['wer']:.2%} CER {r['cer']:.2%} "
              f"({r['utterances']} utterances, {r['reference_words']} words)")
    for f in res.failed:
        print(f"failed: {f}")
    if F.json:
        write_json(F.json, {**res.to_json(), "decoding": to_dict(rec.decoding)}, "json")
    return 0


if __name__ == "__main__":
    run(main)
