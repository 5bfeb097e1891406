"""Train the BPE tokenizer from a text file (one sentence a line) or a manifest's texts.

``python -m cli.train_tokenizer --text corpus.txt --vocab_size 256 --out tokenizer.model``
"""

import json
import os

from absl import flags as absl_flags

from cli import flags
from cli.common import run
from rnnt.config import ModelConfig
from rnnt.errors import DataError
from rnnt.tokenizer import train_bpe

absl_flags.DEFINE_string("text", "", "text file (one sentence per line) or a .jsonl manifest whose 'text' fields are used")
absl_flags.DEFINE_string("out", "tokenizer.model", "where to write the sentencepiece model")
flags.define(ModelConfig, only=["vocab_size"])


def main(argv: list[str]) -> int:
    path = flags.FLAGS.text
    if not path or not os.path.isfile(path):
        raise DataError(f"--text must name an existing file, got {path!r}")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [json.loads(x).get("text", "") if path.endswith(".jsonl") else x for x in f if x.strip()]
    tok = train_bpe(lines, flags.FLAGS.vocab_size, flags.FLAGS.out)
    print(f"wrote {flags.FLAGS.out}: {tok.vocab_size} pieces from {len(lines)} lines")
    return 0


if __name__ == "__main__":
    run(main)
