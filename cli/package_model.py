"""Make a shippable model file from a training checkpoint: fp16 weights, no optimizer state.

``python -m cli.package_model --model exp/en_small/ckpt-00004000.pt --out models/en_small/model.pt``
"""

import dataclasses
import os

from absl import flags as absl_flags

from cli import flags
from cli.common import required_checkpoint, run
from rnnt import checkpoint

absl_flags.DEFINE_string("out", None, "where to write the packaged model (.pt)")
absl_flags.DEFINE_bool("half", True, "store float weights as fp16 (half the size; loaded back as fp32)")
flags.define(extra=("model",))
absl_flags.mark_flag_as_required("out")


def main(argv: list[str]) -> int:
    F = flags.FLAGS
    ckpt = required_checkpoint(F.model, "the training checkpoint to package")
    dev = ckpt.extra.get("dev", {}) if isinstance(ckpt.extra, dict) else {}
    from rnnt.transducer import is_training_only

    state = {k: v for k, v in ckpt.state_dict.items() if not is_training_only(k)}
    inference_config = dataclasses.replace(ckpt.model_config, ctc_weight=0.0, prune_range=0)
    slim = dataclasses.replace(ckpt, optimizer=None, extra={"source": os.path.basename(F.model), "dev": dev},
                               state_dict=state, model_config=inference_config)
    checkpoint.save(F.out, slim, half=F.half)
    print(f"wrote {F.out} ({os.path.getsize(F.out) / 1e6:.1f} MB, step {ckpt.step})")
    return 0


if __name__ == "__main__":
    run(main)
