"""Deepen a model's encoder with identity blocks, to seed a larger model's training from a trained one.

``python -m cli.grow_model [--model M] --add_layers=2 --out exp/grown/model.pt`` (no ``--model``: the shipped model)

The grown file transcribes exactly like the old one (each new block starts as the identity; see
``rnnt/grow.py``). Train it with ``cli.train --init`` and the grown depth, e.g. ``--enc_layers=8``.
"""

import os

from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, run
from rnnt import checkpoint

absl_flags.DEFINE_string("out", None, "where to write the grown model (.pt)")
absl_flags.DEFINE_integer("add_layers", 2, "identity encoder blocks to add")
absl_flags.DEFINE_integer("position", -1, "insert them before this encoder block; -1 = on top of the others")
flags.define(extra=("model",))
absl_flags.mark_flag_as_required("out")


def main(argv: list[str]) -> int:
    F = flags.FLAGS
    from rnnt.grow import grow_encoder

    ckpt = checkpoint.load(model_path(F.model))  # no --model: the shipped model
    grown = grow_encoder(ckpt, F.add_layers, None if F.position < 0 else F.position)
    checkpoint.save(F.out, grown)  # each weight keeps its dtype (fp16 in a shipped model)
    print(f"wrote {F.out} ({os.path.getsize(F.out) / 1e6:.1f} MB): encoder {ckpt.model_config.enc_layers} -> "
          f"{grown.model_config.enc_layers} layers; train it with --init={F.out} "
          f"--enc_layers={grown.model_config.enc_layers}")
    return 0


if __name__ == "__main__":
    run(main)
