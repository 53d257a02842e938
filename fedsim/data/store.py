"""Prepared per-user arrays on disk, and the base class of the naturally partitioned data sets.

A prepared data set is a folder of ``.npy`` files whose rows are sorted by user:

```
meta.json      format version, what it was prepared from, data-set specific fields
users.json     user names, in store order
offsets.npy    int64 (num_users + 1,): user u owns rows offsets[u] .. offsets[u+1]-1
x.npy, y.npy   the samples (any dtype / shape; read memory-mapped)
is_test.npy    optional bool per row: a split given by the source (LEAF's train/test files)
```

Loaders open the arrays memory-mapped, so building a data set of a million users reads
only ``offsets`` and ``users``; a client's rows are read when that client trains. The
arrays are read without pickle and the rest is JSON, so nothing read here can run code.
A folder is written to a temporary sibling and renamed into place, so a killed
preparation never leaves a half-written store that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsim.data.base import ClientData, FederatedDataset
from fedsim.data.options import NaturalUsersOptions
from fedsim.data.partition import subset_rows, train_test_sizes, train_test_split_indices
from fedsim.errors import DataError
from fedsim.seeding import DATA_PARTITION, DATA_SPLIT, DATA_SUBSET

#: bump when the layout of prepared folders changes (old caches are then re-prepared)
FORMAT_VERSION = 1
#: environment variable naming where prepared caches go when the data folder is read-only
CACHE_ENV = "FEDSIM_CACHE"


def default_cache_dir() -> Path:
    """``$FEDSIM_CACHE`` or ``$XDG_CACHE_HOME/fedsim`` or ``~/.cache/fedsim``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fedsim"


def prepared_dir(root: Path, name: str) -> Path:
    """Where the prepared form of ``name`` under ``root`` lives.

    ``ROOT/prepared/NAME/`` when ``root`` is writable; otherwise (e.g. shared, read-only sample
    data) a folder of the user cache keyed by the absolute path of ``root``.
    """
    root = Path(root).resolve()
    # os.access alone says yes to root for any folder; a folder without write bits (shared,
    # read-only sample data) is left alone
    if os.access(root, os.W_OK) and root.stat().st_mode & 0o222:
        return root / "prepared" / name
    key = hashlib.sha1(str(root).encode()).hexdigest()[:12]
    return default_cache_dir() / f"{name}-{key}"


def source_stamp(paths: list[Path]) -> list[dict[str, Any]]:
    """Name, size and modification time of the source files (cheap change detection)."""
    return [{"name": p.name, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in paths]


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The meta.json of a prepared folder, or None if it is absent or unreadable."""
    try:
        return json.loads((Path(folder) / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def is_current(folder: Path, *, kind: str, sources: list[Path], params: dict[str, Any]) -> bool:
    """Whether ``folder`` holds a complete store prepared from these sources and params."""
    meta = read_meta(folder)
    return bool(
        meta
        and meta.get("format") == FORMAT_VERSION
        and meta.get("kind") == kind
        and meta.get("sources") == source_stamp(sources)
        and meta.get("params") == params
    )


def write_store(
    folder: Path,
    *,
    kind: str,
    sources: list[Path],
    params: dict[str, Any],
    users: list[str],
    offsets: np.ndarray,
    arrays: dict[str, np.ndarray],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a prepared folder atomically (temporary sibling, then rename).

    Args:
        folder: Destination folder (replaced if it exists).
        kind: What the store holds (checked when it is read back).
        sources: The raw files it was made from (their size and mtime are recorded).
        params: Preparation parameters (a change re-prepares).
        users: User names in store order.
        offsets: Row offsets per user, length ``len(users) + 1``.
        arrays: ``name -> array`` written as ``name.npy`` (``x``, ``y``, ``is_test``...).
        extra: More fields for meta.json.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.asarray(offsets, dtype=np.int64)
    if offsets.shape != (len(users) + 1,):
        raise DataError(f"internal: {len(users)} users need {len(users) + 1} offsets, got {offsets.shape}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        np.save(tmp / "offsets.npy", offsets)
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", value)
        (tmp / "users.json").write_text(json.dumps(users))
        meta = {
            "format": FORMAT_VERSION,
            "kind": kind,
            "sources": source_stamp(sources),
            "params": params,
            "num_users": len(users),
            "num_rows": int(offsets[-1]),
            **(extra or {}),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks complete
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


class UserStore:
    """A prepared folder opened read-only with its arrays memory-mapped."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        meta = read_meta(self.folder)
        if meta is None:
            raise DataError(f"prepared data in {self.folder} is missing or incomplete; prepare it again")
        self.meta = meta
        self.users: list[str] = json.loads((self.folder / "users.json").read_text())
        self.offsets = np.load(self.folder / "offsets.npy", allow_pickle=False)
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, key: str) -> np.ndarray:
        """A stored array, memory-mapped (opened on first use)."""
        if key not in self._arrays:
            self._arrays[key] = np.load(self.folder / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        return self._arrays[key]

    def has(self, key: str) -> bool:
        return (self.folder / f"{key}.npy").is_file()

    def rows(self, user: int, key: str) -> np.ndarray:
        """A copy of one user's rows of an array."""
        lo, hi = int(self.offsets[user]), int(self.offsets[user + 1])
        return np.array(self.array(key)[lo:hi])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


class NaturalUsersDataset(FederatedDataset):
    """Users as the data defines them (tweet author, play role, celebrity), LEAF style.

    Subclasses build ``self._store`` and call ``_select_users(counts)`` in ``_build``, and
    provide ``_user_samples(u)`` (stored user u's inputs and labels as tensors, read
    lazily) and optionally ``_user_test_mask(u)`` (a split given by the source, e.g.
    LEAF's files). Options (``NaturalUsersOptions``): keep users with at least
    ``min_samples`` samples; keep a random ``user_fraction`` of them (LEAF's ``--sf``);
    shuffle; the first ``num_clients`` train, the next ``design_pool_size`` form the
    adversary's design pool (disjoint, never sampled for training). ``max_samples`` caps
    a user's samples by a random subset (for CPU-sized runs). A user's own samples are
    split into train and test parts by a generator keyed by the user, so the split does
    not depend on which users were chosen.
    """

    options: NaturalUsersOptions
    _users: np.ndarray  # store user index per client id

    def _select_users(self, counts: np.ndarray) -> None:
        opts = self.options
        eligible = np.flatnonzero(np.asarray(counts) >= opts.min_samples)
        rng = self._rng(DATA_PARTITION)
        if opts.user_fraction < 1:
            keep = max(1, int(round(opts.user_fraction * len(eligible))))
            eligible = np.sort(rng.choice(eligible, size=keep, replace=False)) if len(eligible) else eligible
        needed = self.num_clients + self.design_pool_size
        if len(eligible) < needed:
            after = f" (after user_fraction={opts.user_fraction})" if opts.user_fraction < 1 else ""
            raise DataError(
                f"{self.name} has {len(eligible)} users with at least {opts.min_samples} samples{after}, fewer than "
                f"num_clients + design_pool = {self.num_clients} + {self.design_pool_size}; lower data.num_clients "
                "or data.design_pool, or data.options.min_samples"
            )
        self._users = rng.permutation(eligible)[:needed].astype(np.int64)

    def user_name(self, client_id: int) -> str:
        """The natural user (tweet author, play and role, celebrity id) behind a client id."""
        return self._user_names()[int(self._users[self._check_id(client_id)])]

    # --- subclass hooks (the defaults read the subclass's prepared ``self._store``) ---
    _store: UserStore

    def _user_names(self) -> list[str]:
        return self._store.users

    def _user_samples(self, user: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _user_test_mask(self, user: int) -> np.ndarray | None:
        """A train/test split given by the source (True = test), or None to draw one."""
        return None

    def _user_count(self, user: int) -> int:
        return int(self._store.offsets[user + 1] - self._store.offsets[user])

    def _split(self, user: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Train and test row indices of a user's ``n`` (kept) samples."""
        return train_test_split_indices(
            num_samples=n, test_fraction=self.test_fraction, rng=self._rng(DATA_SPLIT, user)
        )

    #: whether the base class applies ``max_samples`` by a random subset of rows
    _random_cap = True

    def _kept(self, user: int) -> np.ndarray | None:
        if not self._random_cap:
            return None
        return subset_rows(
            num_samples=self._user_count(user), max_samples=self.options.max_samples, rng=self._rng(DATA_SUBSET, user)
        )

    # --- FederatedDataset -----------------------------------------------------------
    def num_train_samples(self, client_id: int) -> int:
        user = int(self._users[self._check_id(client_id)])
        keep = self._kept(user)
        mask = self._user_test_mask(user)
        if mask is not None:
            return int((~(mask if keep is None else mask[keep])).sum())
        n = self._user_count(user) if keep is None else len(keep)
        return train_test_sizes(num_samples=n, test_fraction=self.test_fraction)[0]

    def client(self, client_id: int) -> ClientData:
        user = int(self._users[self._check_id(client_id)])
        x, y = self._user_samples(user)
        mask = self._user_test_mask(user)
        keep = self._kept(user)
        if keep is not None:
            keep_t = torch.from_numpy(keep)
            x, y = x[keep_t], y[keep_t]
            mask = None if mask is None else mask[keep]
        if mask is not None:
            train, test = np.flatnonzero(~mask), np.flatnonzero(mask)
        else:
            train, test = self._split(user, int(y.shape[0]))
        train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
        return ClientData(x_train=x[train_t], y_train=y[train_t], x_test=x[test_t], y_test=y[test_t])
