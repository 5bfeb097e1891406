"""Write more text for the language model than the corpus reads aloud.

``python -m cli.lm_text --flagfile flagfiles/corpus_en.txt --exclude corpus/en/text/dev.tsv,corpus/en/text/test.tsv
--out corpus/lm/extra.txt``

The corpus synthesizes 120,000 training sentences, but its sources hold more: every distinct natural
sentence of the fortunes and the GCIDE dictionary (about 286,000 here, the corpus uses about 87,000),
plus as many generated and word-list sentences as asked for. This writes them, normalized, one a line,
for ``cli.train_lm --text``. Sentences in the ``--exclude`` files (the corpus's dev and test text, any
evaluation manifest) are left out, so the language model never saw a held-out sentence. The corpus
flagfile gives the sources and the sentence lengths; ``--seed`` draws the generated sentences.
"""

from __future__ import annotations

from absl import flags as absl_flags

from cli import common, flags
from rnnt.corpus import CorpusConfig, lm_sentences
from rnnt.errors import ConfigError
from rnnt.lm import read_sentences
from rnnt.manifest import write_text_atomically
from rnnt.text import normalize

flags.define(CorpusConfig)
absl_flags.DEFINE_list("exclude", [], "held-out text never to write: .tsv (last column), .jsonl manifests "
                       "('text' fields) or text files, one sentence a line")
absl_flags.DEFINE_integer("generated", 100_000, "generated sentences (numbers, dates, times, letters, commands) to add")
absl_flags.DEFINE_integer("words", 20_000, "word-list sentences (3-8 dictionary words) to add")
absl_flags.DEFINE_string("out", "corpus/lm/extra.txt", "the text file to write")


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    del argv
    F = absl_flags.FLAGS
    if F.generated < 0 or F.words < 0:
        raise ConfigError(f"--generated and --words must be >= 0, got {F.generated} and {F.words}")
    common.output_file(F.out, "out")
    cfg = flags.config_from_flags(CorpusConfig)
    exclude = {normalize(s) for path in F.exclude for s in read_sentences(path)}
    lines = list(tqdm(lm_sentences(cfg, exclude, F.generated, F.words, cfg.seed), desc="sentences",
                      unit="line", disable=None))
    write_text_atomically(F.out, "".join(f"{s}\n" for s in lines))
    print(f"wrote {F.out}: {len(lines)} sentences, {sum(len(s.split()) for s in lines)} words "
          f"({len(exclude)} held-out sentences excluded)")
    return 0


if __name__ == "__main__":
    common.run(main)
