"""Peer figure (not a test): pocketsphinx's WER on a manifest, scored exactly as ``cli.evaluate`` scores ours.

    pip install pocketsphinx==5.1.1      # its wheel ships the en-us model; the project does not need it
    python benchmarks/peer_pocketsphinx.py --manifest corpus/real/manifest.jsonl [--group_by=group]

The devset's README gives pocketsphinx 20.4% there; this prints the same kind of figure for any manifest,
so a model's WER on a new set has a peer beside it. Only the standard library, pocketsphinx and
``rnnt.metrics`` are used, so it runs in a bare environment with pocketsphinx.
"""

import argparse
import collections
import json
import os
import sys
import wave

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rnnt.metrics import corpus_cer, corpus_wer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--group_by", default="", help="also score each value of this manifest field apart")
    ap.add_argument("--json", default="", help="write {wer, cer, utterances: [{audio, ref, hyp}]} here")
    args = ap.parse_args()
    try:
        from pocketsphinx import Decoder
    except ImportError:
        print("error: pocketsphinx is not installed (pip install pocketsphinx==5.1.1)", file=sys.stderr)
        return 1
    decoder = Decoder(loglevel="ERROR")  # the en-us acoustic model, dictionary and 3-gram its wheel ships
    base = os.path.dirname(os.path.abspath(args.manifest))
    rows = []
    with open(args.manifest, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            with wave.open(os.path.join(base, r["audio"])) as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
                    print(f"error: {r['audio']} is not 16 kHz mono 16-bit", file=sys.stderr)
                    return 1
                pcm = w.readframes(w.getnframes())
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp().hypstr if decoder.hyp() else ""
            hyp = " ".join(word for word in hyp.split() if not word.startswith(("<", "[")))
            rows.append({"audio": r["audio"], "ref": r["text"], "hyp": hyp, "group": r.get(args.group_by, "")})
    groups = collections.defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    scores = {}
    for name, part in [("all", rows)] + (sorted(groups.items()) if args.group_by else []):
        wer = corpus_wer([r["ref"] for r in part], [r["hyp"] for r in part])
        cer = corpus_cer([r["ref"] for r in part], [r["hyp"] for r in part])
        scores.setdefault(name, (wer, cer))
        print(f"{name:<10} WER {100 * wer.rate:.2f}% (S {wer.substitutions} D {wer.deletions} I {wer.insertions} / "
              f"{wer.reference_length} words)  CER {100 * cer.rate:.2f}%  ({len(part)} utterances)")
    if args.json:
        wer, cer = scores["all"]
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"wer": wer.rate, "cer": cer.rate, "utterances": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
