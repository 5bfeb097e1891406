"""Make a shippable model file from a training checkpoint: fp16 weights, no optimizer state.

``python -m cli.package_model --model exp/en_small/ckpt-00004000.pt --out models/en_small/model.pt``

``--average_with=A.pt,B.pt`` ships the uniform average of the weights of ``--model`` and those checkpoints
(same shape and tokenizer), e.g. a run's last checkpoint and the model it started from.
"""

import dataclasses
import os

from absl import flags as absl_flags

from cli import flags
from cli.common import model_path, run
from rnnt import checkpoint

absl_flags.DEFINE_string("out", None, "where to write the packaged model (.pt)")
absl_flags.DEFINE_bool("half", True, "store float weights as fp16 (half the size; loaded back as fp32)")
absl_flags.DEFINE_list("average_with", [], "more checkpoints (comma list) whose weights are averaged uniformly with "
                       "--model's; they must have its shape and tokenizer. The other metadata comes from --model")
flags.define(extra=("model",))
absl_flags.mark_flag_as_required("out")


def main(argv: list[str]) -> int:
    F = flags.FLAGS
    path = model_path(F.model)  # no --model: the shipped model (e.g. to average it with a checkpoint)
    ckpt = checkpoint.load(path)
    dev = ckpt.extra.get("dev", {}) if isinstance(ckpt.extra, dict) else {}
    from rnnt.transducer import is_training_only

    state = {k: v for k, v in ckpt.state_dict.items() if not is_training_only(k)}
    extra = {"source": os.path.basename(path), "dev": dev}
    if F.average_with:
        state = average(state, ckpt, F.average_with)
        extra["averaged_with"] = [os.path.basename(p) for p in F.average_with]
    inference_config = dataclasses.replace(ckpt.model_config, ctc_weight=0.0, prune_range=0)
    slim = dataclasses.replace(ckpt, optimizer=None, extra=extra, state_dict=state, model_config=inference_config)
    checkpoint.save(F.out, slim, half=F.half)
    averaged = f", averaged with {len(F.average_with)} more" if F.average_with else ""
    print(f"wrote {F.out} ({os.path.getsize(F.out) / 1e6:.1f} MB, step {ckpt.step}{averaged})")
    return 0


def average(state: dict, ckpt, paths: list[str]) -> dict:
    """The uniform average of ``state`` (from ``ckpt``) and the same weights of the checkpoints at ``paths``."""
    from rnnt.errors import ConfigError

    total = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    for path in paths:
        other = checkpoint.load(path)
        if other.tokenizer.sha1 != ckpt.tokenizer.sha1:
            raise ConfigError(f"{path} has another tokenizer than --model; only the same model can be averaged")
        for k, v in total.items():
            w = other.state_dict.get(k)
            if w is None or w.shape != v.shape:
                raise ConfigError(f"{path} has another shape than --model ({k}); only the same model can be averaged")
            v += w.double()
    n = len(paths) + 1
    return {k: (total[k] / n).to(v.dtype) if k in total else v for k, v in state.items()}


if __name__ == "__main__":
    run(main)
