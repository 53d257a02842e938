"""Text encoding shared by the text data sets: LEAF's character alphabet and a word vocabulary.

Shakespeare (next character): LEAF's 80-character alphabet, plus one id for any other
character (``<unk>``), so the task has 81 classes. Sent140 (sentiment): LEAF's word
splitter (``[\\w']+|[.,!?;]``, lower-cased) and a vocabulary of the most frequent words of
the data (``<pad>`` = 0, ``<unk>`` = 1), each tweet cut or padded to 25 tokens. LEAF and
CANIFE used GloVe 300d embeddings; fedsim learns its embedding instead, so nothing is
downloaded at run time.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

import numpy as np

#: LEAF's Shakespeare alphabet (``leaf/models/utils/language_utils.py``), 80 characters
LEAF_ALPHABET = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
#: id of characters outside the alphabet
CHAR_UNK = len(LEAF_ALPHABET)
#: number of character ids (and next-character classes)
NUM_CHARS = len(LEAF_ALPHABET) + 1
#: Shakespeare window length (characters in, the next one is the label)
SEQ_LEN = 80

_CHAR_TABLE = np.full(65536, CHAR_UNK, dtype=np.uint8)
for _i, _c in enumerate(LEAF_ALPHABET):
    _CHAR_TABLE[ord(_c)] = _i

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
#: tokens per tweet (CANIFE's ``max_seq_len``)
TWEET_LEN = 25
#: words kept in the Sent140 vocabulary (CANIFE's ``vocab_size``)
DEFAULT_MAX_WORDS = 10_000

_WORD = re.compile(r"[\w']+|[.,!?;]")


def encode_chars(text: str) -> np.ndarray:
    """Character ids (uint8) of a string in LEAF's alphabet; other characters -> ``CHAR_UNK``."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    codes = np.minimum(codes, 65535)
    return _CHAR_TABLE[codes]


def decode_chars(ids: Iterable[int]) -> str:
    """Inverse of ``encode_chars`` (unknown characters come back as U+FFFD)."""
    return "".join(LEAF_ALPHABET[i] if i < CHAR_UNK else "\ufffd" for i in ids)


def split_words(text: str) -> list[str]:
    """LEAF's Sent140 splitter: words and the punctuation marks . , ! ? ; (lower-cased)."""
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], *, max_words: int = DEFAULT_MAX_WORDS) -> list[str]:
    """``<pad>``, ``<unk>``, then the ``max_words`` most frequent words (ties: alphabetical)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(split_words(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_words]
    return [*SPECIALS, *(word for word, _ in ranked)]


def encode_words(texts: Iterable[str], vocabulary: list[str], *, length: int = TWEET_LEN) -> np.ndarray:
    """Token ids (int32, shape (N, length)): cut to ``length``, padded with ``<pad>`` at the end."""
    index = {word: i for i, word in enumerate(vocabulary)}
    rows = []
    for text in texts:
        ids = [index.get(word, UNK) for word in split_words(text)[:length]]
        rows.append(ids + [PAD] * (length - len(ids)))
    return np.asarray(rows, dtype=np.int32).reshape(-1, length)
