"""Build a training manifest from a corpus: ``python -m cli.prepare DATASET --root DIR --out MANIFEST``.

DATASET is librispeech, commonvoice, tedlium or csv; the expected layouts are in ``rnnt/prepare.py``.
Examples:
    python -m cli.prepare librispeech --root data/LibriSpeech/train-clean-100 --out data/librispeech/train-clean-100.jsonl
    python -m cli.prepare commonvoice --root data/cv-corpus-17.0/en --split dev --out data/cv/dev.jsonl
    python -m cli.prepare tedlium --root data/TEDLIUM_release-3/legacy/train --out data/tedlium/train.jsonl
    python -m cli.prepare csv --root my_data/pairs.csv --out data/mine.jsonl
Skipped items (missing or unreadable audio, empty transcripts) are counted, the first few printed and
all of them written to MANIFEST.skipped.txt.
"""

from absl import flags as absl_flags

from cli.common import run

absl_flags.DEFINE_string("root", None, "corpus folder (for csv: the CSV file of audio,transcript-file rows)")
absl_flags.DEFINE_string("out", None, "manifest to write (JSON lines: audio, text, duration)")
absl_flags.DEFINE_string("split", "train", "Common Voice: which <split>.tsv to read (train, dev, test, validated)")
absl_flags.DEFINE_string("segments_dir", "", "TED-LIUM: folder for the cut segment WAVs; default beside --out")
absl_flags.DEFINE_integer("workers", 8, "threads reading audio headers")
absl_flags.DEFINE_bool("verify", False, "decode every audio file completely (slower; catches truncated files)")
absl_flags.mark_flags_as_required(["root", "out"])

SHOWN = 10  # skipped items printed


def main(argv: list[str]) -> int:
    from tqdm import tqdm

    from rnnt.errors import ConfigError
    from rnnt.prepare import DATASETS, prepare

    if len(argv) != 2:
        raise ConfigError(f"name one dataset: python -m cli.prepare {{{'|'.join(DATASETS)}}} --root DIR --out MANIFEST")
    F = absl_flags.FLAGS
    with tqdm(desc=f"prepare {argv[1]}", unit="item", disable=None) as bar:
        report = prepare(argv[1], F.root, F.out, F.split, F.segments_dir, F.workers, F.verify,
                         lambda i, n: (setattr(bar, "total", n), bar.update(1)))
    print(f"wrote {report.out}: {report.entries} utterances, {report.seconds / 3600:.2f} h")
    if report.ignored:
        print(f"left out {report.ignored} segment(s) marked ignore_time_segment_in_scoring")
    if report.skipped:
        with open(F.out + ".skipped.txt", "w", encoding="utf-8") as f:
            f.write("\n".join(report.skipped) + "\n")
        print(f"skipped {len(report.skipped)} item(s), listed in {F.out}.skipped.txt; first ones:")
        for line in report.skipped[:SHOWN]:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    run(main)
