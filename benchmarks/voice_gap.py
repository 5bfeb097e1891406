"""Diagnostic (not a test): how far a model is from each voice, in exact transducer loss per target token,
and how much a fixed spectral warp of the features moves that.

    python benchmarks/voice_gap.py --manifest corpus/en/test.jsonl                 # held-out voices
    python benchmarks/voice_gap.py --manifest corpus/en/dev.jsonl --per_voice=20   # training voices
    python benchmarks/voice_gap.py --manifest corpus/en/test.jsonl --warps=0.9,0.95,1.05,1.1

Groups a manifest's lines by their ``voice`` field (espeak-ng and Kokoro voices pooled as ``espeak*`` and
``kokoro*``; use ``--nopool``), takes the first ``--per_voice`` lines of each (at most ``--max_seconds``
long), and prints each group's loss in nats per token in eval mode (no augmentation, the full joint).
WER needs a long test set to separate two models; this loss separates voices on a few dozen utterances.

With ``--warps``, each factor is also applied to every utterance of a group, both as VTLP (the whole
mel axis stretched, pitch moving along) and as a formant warp (only the spectral envelope stretched):
the training augmentations ``--vtlp`` and ``--formant_warp`` use the same functions with random
factors. If a factor lowers a held-out voice's loss by much, that voice is mostly a longer or shorter
vocal tract than the training voices, which those augmentations can teach.
"""

import collections
import os
import sys

import torch
from absl import flags as absl_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cli.common import model_path, run  # noqa: E402

absl_flags.DEFINE_string("manifest", None, "JSONL manifest whose lines name their voice (the synthetic corpus's do)")
absl_flags.DEFINE_string("model", "", "model checkpoint (.pt); empty = the shipped model")
absl_flags.DEFINE_integer("per_voice", 40, "utterances per voice group")
absl_flags.DEFINE_float("max_seconds", 10.0, "skip longer utterances")
absl_flags.DEFINE_string("warps", "", "comma-separated fixed warp factors to try on every group, e.g. 0.9,1.1")
absl_flags.DEFINE_boolean("pool", True, "pool the many espeak-ng and Kokoro voices into one group each")
absl_flags.DEFINE_integer("threads", 1, "torch threads")
absl_flags.mark_flag_as_required("manifest")

_POOLED = ("espeak", "kokoro")


def voice_groups(entries, per_voice: int, max_seconds: float, pool: bool) -> dict[str, list]:
    """voice (or pooled engine) -> its first ``per_voice`` entries of at most ``max_seconds``."""
    groups: dict[str, list] = collections.defaultdict(list)
    for e in entries:
        if e.duration and e.duration > max_seconds:
            continue
        voice = e.tag("voice") or "(none)"
        engine = voice.split("_", 1)[0]
        key = f"{engine}*" if pool and engine in _POOLED else voice
        if len(groups[key]) < per_voice:
            groups[key].append(e)
    return dict(sorted(groups.items()))


def loss_per_token(model, items: list[dict], warp=None) -> float:
    """Exact transducer loss of ``items`` (SpeechDataset items) in nats per target token; ``warp`` maps
    features (B, T_in, F) to warped features of the same shape."""
    from rnnt.train import summed_loss

    total, _, tokens = summed_loss(model, items, torch.device("cpu"), batch_size=12, transform=warp)
    return total / max(tokens, 1)


def main(argv: list[str]) -> int:
    from rnnt.checkpoint import load_model
    from rnnt.data import SpeechDataset
    from rnnt.manifest import read_manifest
    from rnnt.train import formant_warp, warp_mel

    F = absl_flags.FLAGS
    torch.set_num_threads(F.threads)
    model, ck = load_model(model_path(F.model, "torch"))
    model.eval()
    factors = [float(x) for x in F.warps.split(",") if x.strip()]
    groups = voice_groups(read_manifest(F.manifest).entries, F.per_voice, F.max_seconds, F.pool)
    head = "".join(f" {k}{a:<5g}" for k in ("vtlp", "fw") for a in factors)
    print(f"{'voice':<32} {'utts':>4} {'loss':>6}{head}   (nats per token)")
    for name, entries in groups.items():
        ds = SpeechDataset(entries, ck.tokenizer, ck.feature_config)
        items = [ds[i] for i in range(len(ds))]
        row = [loss_per_token(model, items)]
        for fn in (warp_mel, formant_warp):
            for a in factors:
                row.append(loss_per_token(model, items, lambda x, a=a, fn=fn: fn(x, torch.full((len(x),), a))))
        print(f"{name:<32} {len(items):>4} {row[0]:6.3f}" + "".join(f" {v:9.3f}" for v in row[1:]), flush=True)
    return 0


if __name__ == "__main__":
    run(main)
