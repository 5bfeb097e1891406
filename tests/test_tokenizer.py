import pytest

from rnnt.errors import CheckpointError, ConfigError
from rnnt.tokenizer import BLANK_ID, Tokenizer, train_bpe
from tests.conftest import SENTENCES


def test_train_and_roundtrip(tmp_path):
    tok = train_bpe(SENTENCES * 3, 50, str(tmp_path / "t.model"))
    assert tok.blank_id == BLANK_ID == 0
    assert tok.piece(0) == "<blank>"
    ids = tok.encode("The cat, sat on 2 mats!")
    assert ids and 0 not in ids
    assert tok.decode(ids) == "the cat sat on two mats"
    again = Tokenizer.load(str(tmp_path / "t.model"))
    assert again.encode("open the door") == tok.encode("open the door")
    assert again.sha1 == tok.sha1
    assert any(tok.starts_word(i) for i in ids)


def test_bad_inputs(tmp_path):
    with pytest.raises(ConfigError):
        train_bpe(["", "!!!"], 50, str(tmp_path / "x.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError):
        Tokenizer.load(str(bad))
    with pytest.raises(CheckpointError):
        Tokenizer.load(str(tmp_path / "missing.model"))
