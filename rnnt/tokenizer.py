"""SentencePiece BPE tokenizer with blank = id 0.

The sentencepiece ``pad`` piece is used as the transducer blank (id 0) and ``<unk>`` is id 1; there is
no BOS/EOS. Texts are normalized with ``rnnt.text.normalize`` before training and encoding.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable

from rnnt.errors import CheckpointError, ConfigError
from rnnt.text import normalize

BLANK_ID = 0
BLANK_PIECE = "<blank>"
WORD_BOUNDARY = "\u2581"  # sentencepiece's word-start marker


class Tokenizer:
    """Text <-> token ids. Built from the serialized sentencepiece model (bytes)."""

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self.model_proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self.model_proto)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError with C++ text
            raise CheckpointError(f"invalid sentencepiece model ({len(model_proto)} bytes): {e}") from e
        if self._sp.id_to_piece(BLANK_ID) != BLANK_PIECE:
            raise CheckpointError(f"tokenizer id 0 is {self._sp.id_to_piece(BLANK_ID)!r}, expected the blank "
                                  f"{BLANK_PIECE!r}; train it with rnnt.tokenizer.train_bpe")

    @classmethod
    def load(cls, path: str) -> "Tokenizer":
        try:
            with open(path, "rb") as f:
                return cls(f.read())
        except OSError as e:
            raise CheckpointError(f"cannot read tokenizer {path}: {e.strerror}") from e

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    @property
    def vocab_size(self) -> int:
        """Number of ids including blank."""
        return self._sp.get_piece_size()

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.model_proto).hexdigest()

    def encode(self, text: str) -> list[int]:
        """Normalized text -> ids (never blank)."""
        return self._sp.encode(normalize(text), out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([i for i in ids if i != BLANK_ID])

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id)

    def starts_word(self, token_id: int) -> bool:
        return self._sp.id_to_piece(token_id).startswith(WORD_BOUNDARY)


def train_bpe(texts: Iterable[str], vocab_size: int, out_path: str) -> Tokenizer:
    """Train a BPE model on normalized ``texts``, write it to ``out_path`` and return it."""
    import sentencepiece as spm

    if vocab_size < 30:
        raise ConfigError(f"vocab_size {vocab_size} is too small for English BPE; use at least 30")
    lines = [t for t in (normalize(x) for x in texts) if t]
    if not lines:
        raise ConfigError("no text to train the tokenizer on (all lines empty after normalization)")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        character_coverage=1.0, pad_id=BLANK_ID, pad_piece=BLANK_PIECE, unk_id=1, bos_id=-1, eos_id=-1,
        hard_vocab_limit=False, minloglevel=2, input_sentence_size=2_000_000, shuffle_input_sentence=True,
    )
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(model.getvalue())
    os.replace(tmp, out_path)
    return Tokenizer(model.getvalue())
