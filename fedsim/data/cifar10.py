"""CIFAR-10 (Krizhevsky 2009), split among users by a Dirichlet over labels or IID.

Raw input under the data root: the official python tarball ``cifar-10-python.tar.gz``
or its extracted ``cifar-10-batches-py/`` (pickles ``data_batch_1..5``, ``test_batch``,
``batches.meta``). Preparation (``fedsim data prepare cifar10`` or the first load) writes
the 50,000 training images as one uint8 array (``x.npy``, read memory-mapped) and the
official test batch beside it. The training images are partitioned among the training
clients and the design pool together; a client's images are read when it trains and
normalised with the CIFAR-10 channel means and deviations.
"""

from __future__ import annotations

import io
import operator
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from fedsim.data import store
from fedsim.data.base import ClientData, FederatedDataset
from fedsim.data.partition import (
    dirichlet_label_partition,
    iid_partition,
    train_test_sizes,
    train_test_split_indices,
)
from fedsim.errors import DataError

KIND = "cifar10"
TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
PARTITIONS = ("dirichlet", "iid")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _hint(root: Path) -> str:
    return f"run `fedsim data prepare cifar10 --root {root}` or place {TARBALL} (or its {FOLDER}/) there"


def find_source(root: Path) -> tuple[str, list[Path]]:
    """``("folder", [batch files])`` or ``("tarball", [tarball])``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CIFAR-10 data folder {root} does not exist; {_hint(root)}")
    folder = root / FOLDER
    if folder.is_dir():
        files = [folder / name for name in (*TRAIN_BATCHES, TEST_BATCH)]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"CIFAR-10 file {FOLDER}/{missing[0]} not found in {root}; {_hint(root)}")
        return "folder", files
    if (root / TARBALL).is_file():
        return "tarball", [root / TARBALL]
    raise DataError(f"CIFAR-10 file {TARBALL} not found in {root}; {_hint(root)}")


def _unpickle(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except Exception as err:  # noqa: BLE001 - any damage to the pickle is the same user problem
        raise DataError(f"CIFAR-10 batch {name} is damaged ({err.__class__.__name__}); download it again") from None
    if len(data) != len(labels):
        raise DataError(f"CIFAR-10 batch {name} has {len(data)} images but {len(labels)} labels")
    return data, labels


def _read_batches(kind: str, files: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    wanted = (*TRAIN_BATCHES, TEST_BATCH)
    if kind == "folder":
        return {f.name: _unpickle(f.read_bytes(), f.name) for f in files}
    out = {}
    try:
        with tarfile.open(files[0], "r:gz") as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if name in wanted and member.isfile():
                    out[name] = _unpickle(archive.extractfile(member).read(), name)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(
            f"{files[0]} is not a readable CIFAR-10 tarball ({err.__class__.__name__}); download it again"
        ) from None
    missing = [name for name in wanted if name not in out]
    if missing:
        raise DataError(f"{files[0]} lacks {FOLDER}/{missing[0]}; download it again with `fedsim data prepare cifar10`")
    return out


def prepare(root: Path, *, out: Path | None = None, force: bool = False) -> Path:
    """Prepare CIFAR-10 under ``root`` once; returns the prepared folder."""
    root = Path(root)
    kind, files = find_source(root)
    folder = Path(out) if out is not None else store.prepared_dir(root, f"{KIND}-{kind}")
    params = {"source": kind}
    if not force and store.is_current(folder, kind=KIND, sources=files, params=params):
        return folder
    batches = _read_batches(kind, files)
    x = np.concatenate([batches[name][0] for name in TRAIN_BATCHES])
    y = np.concatenate([batches[name][1] for name in TRAIN_BATCHES])
    store.write_store(
        folder,
        kind=KIND,
        sources=files,
        params=params,
        users=["all"],
        offsets=np.array([0, len(y)]),
        arrays={
            "x": x,
            "y": y.astype(np.int8),
            "x_test": batches[TEST_BATCH][0],
            "y_test": batches[TEST_BATCH][1].astype(np.int8),
        },
    )
    return folder


class Cifar10Dataset(FederatedDataset):
    """CIFAR-10 training images split among users (Dirichlet over labels, or IID).

    Args:
        num_clients: Training users.
        design_pool_size: Users reserved for the adversary.
        root: Folder with the tarball or ``cifar-10-batches-py/``.
        partition: ``"dirichlet"`` or ``"iid"``.
        alpha: Dirichlet concentration (smaller: more label skew).
        max_samples: Cap on a user's images (a seeded random subset); None keeps all.
        test_fraction: Fraction of each user's images held out.
        seed: Seed of the partition and the per-user splits.
    """

    name = "cifar10"
    num_classes = 10
    input_shape = (3, 32, 32)
    input_kind = "float"

    def __init__(
        self,
        *,
        num_clients: int,
        design_pool_size: int,
        root: str | None = None,
        partition: str = "dirichlet",
        alpha: float = 0.5,
        max_samples: int | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if root is None:
            raise DataError(
                f"cifar10 needs data.root, the folder with {TARBALL}; run `fedsim data prepare cifar10 --root DIR`"
            )
        if num_clients < 1 or design_pool_size < 0:
            raise DataError(
                f"cifar10 needs num_clients >= 1 and design_pool >= 0, got {num_clients}, {design_pool_size}"
            )
        if partition not in PARTITIONS:
            raise DataError(f"cifar10 option partition={partition!r} is unknown; use one of {PARTITIONS}")
        if not 0 <= test_fraction < 1:
            raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
        if max_samples is not None and max_samples < 1:
            raise DataError(f"cifar10 option max_samples={max_samples} is invalid; must be >= 1 or null")
        self.root = Path(root)
        self._store = store.UserStore(prepare(self.root))
        labels = np.asarray(self._store.array("y"), dtype=np.int64)
        self._num_clients, self._design_pool_size = int(num_clients), int(design_pool_size)
        self.partition, self.alpha = partition, float(alpha)
        self.max_samples, self.test_fraction, self.seed = max_samples, float(test_fraction), int(seed)
        users = self._num_clients + self._design_pool_size
        if partition == "dirichlet":
            parts = dirichlet_label_partition(
                labels=labels, num_partitions=users, alpha=alpha, seed=seed, min_size=2 if test_fraction > 0 else 1
            )
        else:
            parts = iid_partition(num_samples=len(labels), num_partitions=users, seed=seed)
        if max_samples is not None:
            parts = [
                np.sort(np.random.default_rng([seed, 13, k]).choice(p, size=max_samples, replace=False))
                if len(p) > max_samples
                else p
                for k, p in enumerate(parts)
            ]
        self._parts = parts
        self._mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(STD).view(1, 3, 1, 1)

    def num_train_samples(self, client_id: int) -> int:
        return train_test_sizes(
            num_samples=len(self._parts[self._check_id(client_id)]), test_fraction=self.test_fraction
        )[0]

    def client(self, client_id: int) -> ClientData:
        cid = self._check_id(client_id)
        rows = self._parts[cid]
        images = torch.from_numpy(np.asarray(self._store.array("x")[rows])).float().div_(255.0)
        x = (images - self._mean) / self._std
        y = torch.from_numpy(np.asarray(self._store.array("y")[rows], dtype=np.int64))
        train, test = train_test_split_indices(
            num_samples=len(rows), test_fraction=self.test_fraction, rng=np.random.default_rng([self.seed, 11, cid])
        )
        tr, te = torch.from_numpy(train), torch.from_numpy(test)
        return ClientData(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])

    def _check_id(self, client_id: int) -> int:
        try:
            cid = operator.index(client_id)
        except TypeError:
            raise DataError(f"client id must be an integer, got {client_id!r}") from None
        total = self._num_clients + self._design_pool_size
        if not 0 <= cid < total:
            raise DataError(f"client id {cid} is out of range; cifar10 has ids 0..{total - 1}")
        return cid


def write_fake_tree(root: Path, *, images_per_batch: int = 20, seed: int = 0, tarball: bool = False) -> Path:
    """Write a tiny CIFAR-10 in the official pickle layout (for tests and demos)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, images_per_batch)],
            b"data": rng.integers(0, 256, (images_per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(images_per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(
        pickle.dumps(
            {
                b"label_names": [
                    b"airplane",
                    b"automobile",
                    b"bird",
                    b"cat",
                    b"deer",
                    b"dog",
                    b"frog",
                    b"horse",
                    b"ship",
                    b"truck",
                ],
                b"num_vis": 3072,
            }
        )
    )
    if tarball:
        path = Path(root) / TARBALL
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            archive.add(folder, arcname=FOLDER)
        path.write_bytes(buffer.getvalue())
        return path
    return folder
