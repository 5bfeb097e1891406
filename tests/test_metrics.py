from rnnt.metrics import align_counts, corpus_wer, word_errors


def test_counts():
    c = word_errors("the cat sat on the mat", "the cat sit on mat mat now")
    assert (c.substitutions, c.deletions, c.insertions, c.reference_length) == (2, 0, 1, 6)
    assert c.rate == 0.5
    assert align_counts("abc", "") .deletions == 3
    assert align_counts("", "ab").insertions == 2


def test_normalized_scoring():
    assert word_errors("Ten of clubs.", "ten of clubs").errors == 0
    assert word_errors("10 of clubs", "ten of clubs").errors == 0
    total = corpus_wer(["a b", "c d e"], ["a b", "c e"])
    assert total.errors == 1 and total.reference_length == 5
