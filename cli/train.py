"""Train a transducer: ``python -m cli.train --flagfile flagfiles/en_small.txt [--resume]``.

Works under ``torchrun --nproc_per_node N -m cli.train ...`` for data-parallel training.
"""

from absl import flags as absl_flags

from cli import flags
from cli.common import run
from rnnt.config import AllConfigs, AugmentConfig, FeatureConfig, ModelConfig, TrainConfig

flags.define(FeatureConfig, ModelConfig, TrainConfig, AugmentConfig, extra=("resume", "init"))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise absl_flags.Error(f"unexpected arguments: {argv[1:]}")
    from rnnt.train import train

    cfgs = AllConfigs(features=flags.config_from_flags(FeatureConfig), model=flags.config_from_flags(ModelConfig),
                      train=flags.config_from_flags(TrainConfig), augment=flags.config_from_flags(AugmentConfig))
    if not cfgs.train.train_manifest:
        from rnnt.errors import ConfigError

        raise ConfigError("--train_manifest is required (a JSONL manifest; see README)")
    result = train(cfgs, flagfile=flags.flagfile_text(), resume=flags.FLAGS.resume, init=flags.FLAGS.init)
    if result.get("rank", 0) == 0:
        print(f"trained to step {result['step']}, loss {result['loss']:.4f}")
    return 0


if __name__ == "__main__":
    run(main)
