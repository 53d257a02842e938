"""Shakespeare next-character prediction, one client per (play, role), as in LEAF.

Raw input, under the data root (``source=auto`` takes the first found):
- LEAF's JSON output (``leaf/``, ``data/train|test/``): ``x`` 80-character strings, ``y``
  the next character; LEAF's own users and train/test split are kept;
- the Project Gutenberg complete works (``pg100.txt``, ``100-0.txt``, or LEAF's
  ``raw_data.txt``): parsed into plays (titles of the table of contents) and speeches
  (an upper-case ``ROLE.`` line, then its lines); users are (play, role);
- a speeches file in char-rnn's format (``tinyshakespeare.txt`` or ``input.txt``: a
  ``Role:`` line, the speech, a blank line): users are roles (that file has no play
  boundaries, so a role name shared by two plays is one user).

A user's lines are joined with spaces into one text; its samples are every 80-character
window with the next character as label, encoded in LEAF's 80-character alphabet (+1 id
for other characters: 81 classes). Raw texts are stored once per user (not 80 times), and
windows are cut when the client trains. A drawn split is contiguous, like LEAF's: the
first windows train, then 80 windows are skipped, then the test windows, so no test
character is ever inside a training window (LEAF's test files count those 79-80 skipped
windows in num_samples). ``max_samples`` takes a seeded contiguous stretch of
``max_samples`` usable windows (plus the gap).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from fedsim.data import store
from fedsim.data.leaf import find_leaf_files, read_leaf
from fedsim.data.options import ShakespeareOptions
from fedsim.data.partition import train_test_sizes
from fedsim.data.store import NaturalUsersDataset, UserStore
from fedsim.data.text import NUM_CHARS, SEQ_LEN, encode_chars
from fedsim.errors import DataError
from fedsim.seeding import DATA_SUBSET

KIND = "shakespeare"
GUTENBERG_NAMES = ("pg100.txt", "100-0.txt", "raw_data.txt")
SPEECHES_NAMES = ("tinyshakespeare.txt", "input.txt")
SOURCES = ("auto", "leaf", "gutenberg", "speeches")

_ROLE = re.compile(r"^([A-Z][A-Z0-9 '’&,\-]*[A-Z0-9])\.(?:\s+(.*))?$")
_SPEECH_ROLE = re.compile(r"^([A-Za-z][^:\n]{0,60}):$")
_BRACKETS = re.compile(r"\[[^\]]*\]")
_SPACES = re.compile(r"\s+")


def _hint(root: Path) -> str:
    return (
        f"run `fedsim data prepare shakespeare --root {root}` or place {GUTENBERG_NAMES[0]} "
        "(Gutenberg complete works), LEAF's JSON (leaf/ or data/train, data/test) or tinyshakespeare.txt there"
    )


def find_source(root: Path, *, source: str = "auto") -> tuple[str, list[Path]]:
    """``(kind, files)`` to prepare from; kind is ``leaf``, ``gutenberg`` or ``speeches``."""
    root = Path(root)
    if source not in SOURCES:
        raise DataError(f"shakespeare option source={source!r} is unknown; use one of {SOURCES}")
    if not root.is_dir():
        raise DataError(f"Shakespeare data folder {root} does not exist; {_hint(root)}")
    if source in ("auto", "leaf"):
        files = find_leaf_files(root)
        if files:
            return "leaf", files
    if source in ("auto", "gutenberg"):
        for name in GUTENBERG_NAMES:
            if (root / name).is_file():
                return "gutenberg", [root / name]
    if source in ("auto", "speeches"):
        for name in SPEECHES_NAMES:
            if (root / name).is_file():
                return "speeches", [root / name]
    wanted = {"leaf": "LEAF JSON", "gutenberg": GUTENBERG_NAMES[0], "speeches": SPEECHES_NAMES[0]}.get(source)
    if wanted:
        raise DataError(f"Shakespeare source {source}: {wanted} not found in {root}; {_hint(root)}")
    raise DataError(f"Shakespeare file {GUTENBERG_NAMES[0]} not found in {root}; {_hint(root)}")


def _join(lines: list[str]) -> str:
    return _SPACES.sub(" ", " ".join(lines)).strip()


def parse_speeches(text: str) -> dict[str, str]:
    """char-rnn's format: ``Role:`` line, speech lines, blank line -> role -> joined text."""
    users: dict[str, list[str]] = {}
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        lines = block.strip("\n").split("\n")
        match = _SPEECH_ROLE.match(lines[0].strip())
        if match and len(lines) > 1:
            users.setdefault(match.group(1).strip(), []).extend(lines[1:])
    return {role: _join(lines) for role, lines in users.items()}


def parse_gutenberg(text: str) -> dict[str, str]:
    """The Gutenberg complete works -> ``"PLAY_ROLE"`` -> that role's lines joined.

    Plays are the titles listed under the first ``Contents`` line; a speech starts with a
    line ``ROLE.`` (or ``ROLE. text``) at the start of a line and runs to the next blank
    line; indented lines (stage directions) and ``[...]`` are dropped. Works without
    speeches (the sonnets, the poems) yield no users.
    """
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    start = re.search(r"^\*\*\* ?START OF.*$", text, flags=re.M)
    end = re.search(r"^\*\*\* ?END OF.*$", text, flags=re.M)
    if start:
        text = text[start.end() : end.start() if end else None]
    lines = text.split("\n")
    titles: set[str] = set()
    i = next((k for k, line in enumerate(lines) if line.strip().lower() == "contents"), None)
    if i is None:
        raise DataError("the Gutenberg file has no table of contents; is it The Complete Works of William Shakespeare?")
    k, blanks = i + 1, 0
    while k < len(lines) and (blanks < 2 or not titles):
        stripped = lines[k].strip()
        if stripped:
            titles.add(stripped)
            blanks = 0
        else:
            blanks += 1
        k += 1
    users: dict[str, list[str]] = {}
    play: str | None = None
    speaker: list[str] | None = None
    for line in lines[k:]:
        stripped = line.strip()
        if stripped in titles and line == line.lstrip():
            play, speaker = stripped, None
            continue
        if not stripped:
            speaker = None
            continue
        if play is None:
            continue
        match = _ROLE.match(line)
        if match and not match.group(1).startswith(("ACT", "SCENE")):
            key = f"{play}_{match.group(1)}"
            key = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_").upper()
            speaker = users.setdefault(key, [])
            if match.group(2):
                speaker.append(_BRACKETS.sub(" ", match.group(2)))
            continue
        if speaker is not None and line == line.lstrip():
            speaker.append(_BRACKETS.sub(" ", line))
    return {user: _join(parts) for user, parts in users.items() if parts}


def prepare(root: Path, *, source: str = "auto", out: Path | None = None, force: bool = False) -> Path:
    """Prepare Shakespeare under ``root`` once; returns the prepared folder."""
    root = Path(root)
    kind, files = find_source(root, source=source)
    folder = Path(out) if out is not None else store.prepared_dir(root, f"{KIND}-{kind}")
    params = {"source": kind, "seq_len": SEQ_LEN}
    if not force and store.is_current(folder, kind=KIND, sources=files, params=params):
        return folder
    if kind == "leaf":
        order, data = read_leaf(files)
        xs, ys, tests, counts = [], [], [], []
        for name in order:
            user = data[name]
            if any(len(x) != SEQ_LEN for x in user.x) or any(len(y) != 1 for y in user.y):
                raise DataError(
                    f"LEAF Shakespeare user {name!r}: samples must be {SEQ_LEN}-character strings with a 1-character label"
                )
            xs.append(encode_chars("".join(user.x)).reshape(-1, SEQ_LEN))
            ys.append(encode_chars("".join(user.y)))
            tests.append(np.asarray(user.test, dtype=bool))
            counts.append(len(user.y))
        arrays = {"x": np.concatenate(xs), "y": np.concatenate(ys)}
        is_test = np.concatenate(tests)
        if is_test.any():
            arrays["is_test"] = is_test
        offsets = np.concatenate([[0], np.cumsum(counts)])
        store.write_store(
            folder,
            kind=KIND,
            sources=files,
            params=params,
            users=order,
            offsets=offsets,
            arrays=arrays,
            extra={"layout": "windows"},
        )
        return folder
    raw = files[0].read_text(encoding="utf-8", errors="replace")
    users = parse_gutenberg(raw) if kind == "gutenberg" else parse_speeches(raw)
    if not users:
        raise DataError(f"no speeches found in {files[0]}; is it Shakespeare in the {kind} format?")
    names = sorted(users)
    streams = [encode_chars(users[name]) for name in names]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in streams])])
    store.write_store(
        folder,
        kind=KIND,
        sources=files,
        params=params,
        users=names,
        offsets=offsets,
        arrays={"x": np.concatenate(streams)},
        extra={"layout": "stream"},
    )
    return folder


class ShakespeareDataset(NaturalUsersDataset):
    """Next-character prediction over 80-character windows, one client per (play, role).

    Takes ``FederatedDataset``'s arguments (``root``: the folder with the raw files, see
    the module docstring); ``data.options``: ``ShakespeareOptions`` (``min_samples``:
    windows a user needs (LEAF used 64 for its ``keep_64`` files), ``user_fraction``,
    ``max_samples``: a random contiguous stretch of that many windows of a user's text, or
    a random subset of LEAF's samples, ``source``). LEAF JSON keeps its own split.
    """

    name = "shakespeare"
    num_classes = NUM_CHARS
    input_shape = (SEQ_LEN,)
    input_kind = "long"
    vocab_size = NUM_CHARS
    options: ShakespeareOptions

    def _build(self) -> None:
        self._store = UserStore(prepare(self.root, source=self.options.source))
        self.layout = self._store.meta["layout"]
        self._stream = self.layout == "stream"
        self._random_cap = not self._stream
        self._has_split = self._store.has("is_test")
        counts = self._store.counts
        if self._stream:
            counts = np.maximum(counts - SEQ_LEN, 0)
        self._counts = counts
        self._select_users(counts)

    def _user_count(self, user: int) -> int:
        n = int(self._counts[user])
        cap = self.options.max_samples
        if self._stream and cap is not None:
            # the stretch holds max_samples usable windows plus the train/test gap
            n = min(n, cap + (SEQ_LEN if self.test_fraction > 0 else 0))
        return n

    def _stream_sizes(self, n: int) -> tuple[int, int, int]:
        """(train, test, gap) windows of a stretch of ``n`` windows (train, gap, test)."""
        gap = SEQ_LEN if self.test_fraction > 0 and n > SEQ_LEN + 1 else 0
        if gap == 0:
            return n, 0, 0
        num_train, num_test = train_test_sizes(num_samples=n - gap, test_fraction=self.test_fraction)
        return num_train, num_test, gap

    def num_train_samples(self, client_id: int) -> int:
        if not self._stream:
            return super().num_train_samples(client_id)
        return self._stream_sizes(self._user_count(int(self._users[self._check_id(client_id)])))[0]

    def _user_samples(self, user: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._stream:
            x = torch.from_numpy(self._store.rows(user, "x").astype(np.int64))
            y = torch.from_numpy(self._store.rows(user, "y").astype(np.int64))
            return x, y
        n_all, n = int(self._counts[user]), self._user_count(user)
        lo = int(self._store.offsets[user])
        start = 0
        if n < n_all:
            start = int(self._rng(DATA_SUBSET, user).integers(0, n_all - n + 1))
        text = np.array(self._store.array("x")[lo + start : lo + start + n + SEQ_LEN]).astype(np.int64)
        chars = torch.from_numpy(text)
        return chars.unfold(0, SEQ_LEN, 1)[:n].contiguous(), chars[SEQ_LEN:].clone()

    def _user_test_mask(self, user: int) -> np.ndarray | None:
        return self._store.rows(user, "is_test") if self._has_split else None

    def _split(self, user: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._stream:
            return super()._split(user, n)
        num_train, num_test, gap = self._stream_sizes(n)
        test_start = num_train + gap
        return np.arange(num_train, dtype=np.int64), np.arange(test_start, test_start + num_test, dtype=np.int64)
