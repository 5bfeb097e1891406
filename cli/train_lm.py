"""Build the token n-gram language model that beam search can fuse (``--beam N --lm PATH``).

``python -m cli.train_lm --text corpus/en/text/train.tsv --out models/en_small/lm.npz``

``--text`` takes comma-separated files: a ``.jsonl`` manifest (its ``text`` fields), a ``.tsv`` (the last
column: the corpus's ``text/train.tsv`` holds every training sentence, synthesized or not) or plain text,
one sentence a line. Never build it from dev or test text: the scores would flatter the model.
"""

import os

from absl import flags as absl_flags

from cli.common import DEFAULT_ONNX, output_file, run
from rnnt.errors import ConfigError, DataError
from rnnt.lm import read_sentences

absl_flags.DEFINE_list("text", [], "training text: .jsonl manifests ('text' fields), .tsv files (last column) or "
                       "plain text files, one sentence a line")
absl_flags.DEFINE_string("tokenizer", os.path.join(DEFAULT_ONNX, "tokenizer.model"),
                         "the tokenizer of the transducer it will serve: a sentencepiece .model file, a .pt "
                         "checkpoint or an ONNX export folder (default: the shipped model's)")
absl_flags.DEFINE_integer("order", 4, "n-gram order in tokens")
absl_flags.DEFINE_integer("min_count", 2, "drop n-grams of order 3 and up seen fewer times than this")
absl_flags.DEFINE_list("eval_text", [], "held-out text files (same formats) to report perplexity on")
absl_flags.DEFINE_string("out", "lm.npz", "where to write the model (.npz)")


def load_tokenizer(path: str):
    """The tokenizer in a sentencepiece file, a checkpoint or an export folder."""
    from rnnt.tokenizer import Tokenizer

    if os.path.isdir(path):
        return Tokenizer.load(os.path.join(path, "tokenizer.model"))
    if path.endswith(".pt"):
        from rnnt.checkpoint import load

        return load(path).tokenizer
    return Tokenizer.load(path)


def main(argv: list[str]) -> int:
    import math

    from tqdm import tqdm

    from rnnt.lm import NgramLM

    F = absl_flags.FLAGS
    if not F.text:
        raise ConfigError("--text is required: the sentences to learn from")
    if F.order < 1 or F.min_count < 1:
        raise ConfigError(f"--order and --min_count must be >= 1, got {F.order} and {F.min_count}")
    output_file(F.out, "out")
    tok = load_tokenizer(F.tokenizer)
    sentences = list(dict.fromkeys(s for p in F.text for s in read_sentences(p)))  # each sentence once
    if not sentences:
        raise DataError(f"no sentences in {', '.join(F.text)}")
    seqs = [tok.encode(s) for s in tqdm(sentences, desc="tokenize", unit="line", disable=None)]
    lm = NgramLM.build(seqs, F.order, tok.vocab_size, F.min_count, tok.sha1)
    lm.save(F.out)
    grams = sum(len(t) for t in lm.tables)
    print(f"wrote {F.out}: order {F.order}, {len(sentences)} sentences, {sum(map(len, seqs))} tokens, "
          f"{grams} contexts, {os.path.getsize(F.out) / 1e6:.1f} MB")
    for path in F.eval_text:
        held = [tok.encode(s) for s in read_sentences(path)]
        n = sum(map(len, held))
        if n:
            print(f"{path}: perplexity {math.exp(-sum(lm.score(s) for s in held) / n):.2f} per token ({n} tokens)")
    return 0


if __name__ == "__main__":
    run(main)
