"""Sentiment140 (Go et al. 2009) partitioned by Twitter user, as LEAF and CANIFE use it.

Raw input, under the data root (first found wins):
- LEAF's JSON output (``leaf/``, ``data/train|test/``): ``x = [id, date, query, user, text]``,
  ``y`` 0/1; LEAF's own train/test split is kept;
- ``training.1600000.processed.noemoticon.csv`` (latin-1, no header; polarity 0/4, id,
  date, query, user, text), or the official ``trainingandtestdata.zip`` that holds it;
- the CSV named by the ``csv_file`` option, or else the only ``*.csv`` in the folder
  (e.g. a sample of the official file).

Preparation (``fedsim data prepare sent140`` or the first load) sorts the tweets by user,
tokenises them (LEAF's splitter, lower case) into 25 ids with a vocabulary of the
``max_words`` most frequent words plus ``<pad>``/``<unk>`` (CANIFE/LEAF used GloVe 300d
embeddings; fedsim learns its embedding so nothing is downloaded at run time), and saves
memory-mappable arrays. A client's tweets are read when it trains.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from fedsim.data import store
from fedsim.data.leaf import find_leaf_files, read_leaf
from fedsim.data.options import Sent140Options
from fedsim.data.store import NaturalUsersDataset, UserStore
from fedsim.data.text import DEFAULT_MAX_WORDS, TWEET_LEN, build_vocabulary, encode_words
from fedsim.errors import DataError

CSV_NAME = "training.1600000.processed.noemoticon.csv"
ZIP_NAME = "trainingandtestdata.zip"
KIND = "sent140"
SOURCES = ("auto", "csv", "leaf")


def _hint(root: Path) -> str:
    return f"run `fedsim data prepare sent140 --root {root}` or place {CSV_NAME} (or {ZIP_NAME}) there"


def find_source(root: Path, *, source: str = "auto", csv_file: str | None = None) -> tuple[str, list[Path]]:
    """Which raw files of ``root`` to prepare from: ``("leaf", files)`` or ``("csv"|"zip", [file])``.

    Raises:
        DataError: If the folder or the files are missing (one line, with the fix).
    """
    root = Path(root)
    if source not in SOURCES:
        raise DataError(f"sent140 option source={source!r} is unknown; use one of {SOURCES}")
    if not root.is_dir():
        raise DataError(f"Sent140 data folder {root} does not exist; {_hint(root)}")
    if source in ("auto", "leaf") and csv_file is None:
        files = find_leaf_files(root)
        if files:
            return "leaf", files
        if source == "leaf":
            raise DataError(
                f"no LEAF JSON for sent140 in {root} (looked in leaf/, data/train, data/test and the folder itself)"
            )
    if csv_file is not None:
        path = root / csv_file
        if not path.is_file():
            raise DataError(f"Sent140 file {csv_file} not found in {root}; {_hint(root)}")
        return "csv", [path]
    if (root / CSV_NAME).is_file():
        return "csv", [root / CSV_NAME]
    if (root / ZIP_NAME).is_file():
        return "zip", [root / ZIP_NAME]
    others = sorted(root.glob("*.csv"))
    if len(others) == 1:
        return "csv", others
    raise DataError(f"Sent140 file {CSV_NAME} not found in {root}; {_hint(root)}")


def _read_csv(kind: str, path: Path):
    import pandas as pd

    names = ["polarity", "id", "date", "query", "user", "text"]
    try:
        if kind == "zip":
            with zipfile.ZipFile(path) as archive:
                with archive.open(CSV_NAME) as handle:
                    frame = pd.read_csv(
                        handle, encoding="latin-1", header=None, names=names, dtype=str, keep_default_na=False
                    )
        else:
            frame = pd.read_csv(path, encoding="latin-1", header=None, names=names, dtype=str, keep_default_na=False)
    except (KeyError, zipfile.BadZipFile) as err:
        raise DataError(
            f"{path} is not the Sentiment140 archive ({err}); download it again with `fedsim data prepare sent140`"
        ) from None
    except (ValueError, OSError) as err:
        raise DataError(f"cannot read Sentiment140 CSV {path}: {str(err).splitlines()[0]}") from None
    polarity = frame["polarity"].to_numpy()
    if not np.isin(polarity, ["0", "2", "4"]).all():
        raise DataError(f"{path} is not Sentiment140's CSV (its first column must be the polarity 0/4)")
    keep = polarity != "2"  # the training file has no neutral tweets; the test file has some
    users = frame["user"].to_numpy()[keep].astype(str)
    texts = frame["text"].to_numpy()[keep].astype(str)
    labels = (polarity[keep] == "4").astype(np.int64)
    return users, texts, labels, None


def _read_leaf(files: list[Path]):
    order, data = read_leaf(files)
    users, texts, labels, is_test = [], [], [], []
    for name in order:
        user = data[name]
        for x, y, test in zip(user.x, user.y, user.test):
            users.append(name)
            texts.append(str(x[-1]) if isinstance(x, list) else str(x))
            labels.append(int(float(y)))
            is_test.append(test)
    flags = np.asarray(is_test, dtype=bool)
    return (
        np.asarray(users, dtype=str),
        np.asarray(texts, dtype=object),
        np.asarray(labels, dtype=np.int64),
        (flags if flags.any() else None),
    )


def prepare(
    root: Path,
    *,
    source: str = "auto",
    csv_file: str | None = None,
    max_words: int = DEFAULT_MAX_WORDS,
    out: Path | None = None,
    force: bool = False,
) -> Path:
    """Prepare Sent140 under ``root`` once (sorted by user, tokenised); returns the folder.

    Re-uses an existing preparation made from the same files with the same parameters.
    """
    root = Path(root)
    if max_words < 1:
        raise DataError(f"sent140 option max_words={max_words} is invalid; must be >= 1")
    kind, files = find_source(root, source=source, csv_file=csv_file)
    folder = Path(out) if out is not None else store.prepared_dir(root, f"{KIND}-{kind}")
    params = {"max_words": int(max_words), "source": kind, "seq_len": TWEET_LEN}
    if not force and store.is_current(folder, kind=KIND, sources=files, params=params):
        return folder
    users, texts, labels, is_test = _read_leaf(files) if kind == "leaf" else _read_csv(kind, files[0])
    if len(users) == 0:
        raise DataError(f"no tweets in {files[0]}; download it again with `fedsim data prepare sent140 --root {root}`")
    order = np.argsort(users, kind="stable")
    users, texts, labels = users[order], texts[order], labels[order]
    names, starts = np.unique(users, return_index=True)
    offsets = np.append(starts, len(users)).astype(np.int64)
    vocabulary = build_vocabulary(texts, max_words=max_words)
    tokens = encode_words(texts, vocabulary)
    arrays = {"x": tokens, "y": labels.astype(np.int8)}
    if is_test is not None:
        arrays["is_test"] = is_test[order]
    (folder.parent).mkdir(parents=True, exist_ok=True)
    store.write_store(
        folder,
        kind=KIND,
        sources=files,
        params=params,
        users=[str(n) for n in names],
        offsets=offsets,
        arrays=arrays,
        extra={"vocabulary": vocabulary},
    )
    return folder


class Sent140Dataset(NaturalUsersDataset):
    """Sentiment140 tweets, one client per Twitter user; inputs are 25 token ids.

    Takes ``FederatedDataset``'s arguments (``root``: the folder with the raw files, see
    the module docstring); ``data.options``: ``Sent140Options`` (``min_samples``,
    ``user_fraction``, ``max_samples``, ``max_words``: vocabulary size (CANIFE: 10,000),
    ``source``, ``csv_file``). LEAF JSON keeps its own train/test split.
    """

    name = "sent140"
    num_classes = 2
    input_shape = (TWEET_LEN,)
    input_kind = "long"
    options: Sent140Options

    def _build(self) -> None:
        opts = self.options
        self._store = UserStore(
            prepare(self.root, source=opts.source, csv_file=opts.csv_file, max_words=opts.max_words)
        )
        self.vocabulary: list[str] = self._store.meta["vocabulary"]
        self.vocab_size = len(self.vocabulary)
        self._has_split = self._store.has("is_test")
        self._select_users(self._store.counts)

    def _user_samples(self, user: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(self._store.rows(user, "x").astype(np.int64))
        y = torch.from_numpy(self._store.rows(user, "y").astype(np.int64))
        return x, y

    def _user_test_mask(self, user: int) -> np.ndarray | None:
        return self._store.rows(user, "is_test") if self._has_split else None
