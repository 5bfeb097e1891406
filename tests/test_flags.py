"""Every flag maps to a config field, and every flagfile parses."""

import dataclasses
import glob
import os
import subprocess
import sys

import pytest

from rnnt import config
from tests.conftest import REPO

CONFIGS = [config.FeatureConfig, config.ModelConfig, config.TrainConfig, config.AugmentConfig,
           config.DecodingConfig, config.EndpointConfig, config.SourceConfig, config.OutputConfig]


def test_every_config_field_has_help_from_its_comment():
    from cli.flags import _field_help

    for cls in CONFIGS:
        helps = _field_help(cls)
        for f in dataclasses.fields(cls):
            if f.name not in ("seed",):
                assert f.name in helps, f"{cls.__name__}.{f.name} has no trailing # help comment"


def test_train_flags_map_to_fields():
    from absl import flags as absl_flags

    import cli.train  # noqa: F401  (defines the flags)

    fields = {f.name for cls in CONFIGS[:4] for f in dataclasses.fields(cls)}
    defined = set(absl_flags.FLAGS.get_key_flags_for_module(sys.modules["cli.train"]) and
                  [f.name for f in absl_flags.FLAGS.get_key_flags_for_module(sys.modules["cli.train"])])
    assert fields <= defined
    assert defined - fields <= {"resume", "init"}


@pytest.mark.parametrize("flagfile", sorted(glob.glob(os.path.join(REPO, "flagfiles", "*.txt"))))
def test_flagfiles_parse(flagfile):
    """Each flagfile is accepted by the command it is for (parsed into configs, nothing run)."""
    module = "cli.make_corpus" if os.path.basename(flagfile).startswith("corpus") else "cli.train"
    code = (f"import sys; sys.argv=['x', '--flagfile={flagfile}']; import {module} as m; "
            "from absl import flags; flags.FLAGS(sys.argv); print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
    if module == "cli.train":
        code2 = (f"import sys; sys.argv=['x', '--flagfile={flagfile}']; import cli.train; from absl import flags; "
                 "flags.FLAGS(sys.argv); from cli import flags as f; from rnnt import config as c; "
                 "[f.config_from_flags(k) for k in (c.FeatureConfig, c.ModelConfig, c.TrainConfig, c.AugmentConfig)]")
        proc = subprocess.run([sys.executable, "-c", code2], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_bad_config_values_raise_config_error():
    with pytest.raises(config.ConfigError if hasattr(config, "ConfigError") else Exception):
        config.ModelConfig(joint_mode="product")
    from rnnt.errors import ConfigError

    with pytest.raises(ConfigError):
        config.FeatureConfig(hop_length=0)
    with pytest.raises(ConfigError):
        config.TrainConfig(precision="fp8")


def test_cli_bad_flag_value_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "cli.train", "--train_manifest=x.jsonl", "--joint_mode=product"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
