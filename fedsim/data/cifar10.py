"""CIFAR-10 (Krizhevsky 2009), split among users by a Dirichlet over labels or IID.

Raw input under the data root: the official python tarball ``cifar-10-python.tar.gz``
or its extracted ``cifar-10-batches-py/`` (pickles ``data_batch_1..5``, ``test_batch``,
``batches.meta``). Preparation (``fedsim data prepare cifar10`` or the first load) writes
the 50,000 training images as one uint8 array (``x.npy``, read memory-mapped) and the
official test batch beside it. The training images are partitioned among the training
clients and the design pool together; a client's images are read when it trains and
normalised with the CIFAR-10 channel means and deviations.

The batches are pickles, and unpickling can run code, so nothing is unpickled unverified:
a tarball must have the official sha256 (or the one named with ``--sha256`` /
``FEDSIM_CIFAR10_SHA256``, e.g. for a mirror) before any member is read, each file of an
extracted folder must have its official sha256, and every batch is read by
``BatchUnpickler``, which builds numpy arrays and plain containers and refuses anything
else. The prepared ``.npy`` files are read without pickle.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from fedsim.data import store
from fedsim.data.base import PartitionedDataset
from fedsim.data.options import Cifar10Options
from fedsim.errors import DataError

KIND = "cifar10"
TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


#: sha256 of the official tarball (its md5, c58f30108f718f92721af3b95e74349a, is the one the
#: official page lists and torchvision checks); override with --sha256 or FEDSIM_CIFAR10_SHA256
TARBALL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
SHA256_ENV = "FEDSIM_CIFAR10_SHA256"
#: sha256 of the files in the official tarball (the page publishes none; these agree with
#: the ones several independent projects pin, and with torchvision's md5 of each file)
BATCH_SHA256 = {
    "data_batch_1": "54636561a3ce25bd3e19253c6b0d8538147b0ae398331ac4a2d86c6d987368cd",
    "data_batch_2": "766b2cef9fbc745cf056b3152224f7cf77163b330ea9a15f9392beb8b89bc5a8",
    "data_batch_3": "0f00d98ebfb30b3ec0ad19f9756dc2630b89003e10525f5e148445e82aa6a1f9",
    "data_batch_4": "3f7bb240661948b8f4d53e36ec720d8306f5668bd0071dcb4e6c947f78e9682b",
    "data_batch_5": "d91802434d8376bbaeeadf58a737e3a1b12ac839077e931237e0dcd43adcb154",
    "test_batch": "f53d8d457504f7cff4ea9e021afcf0e0ad8e24a91f3fc42091b8adef61157831",
    "batches.meta": "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb",
}


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


class _Refused(Exception):
    """A pickle named a global that a CIFAR-10 batch never holds."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 batch and nothing else.

    A batch is a dict of byte strings, lists of ints and one uint8 numpy array; plain
    containers need no class, and the array needs numpy's reconstruction function, the
    ``ndarray`` class and ``dtype``. Any other global (``os.system``, ``builtins.eval``,
    a numpy function that is not those) is refused before it is looked up.
    """

    _RECONSTRUCT = np.empty(0).__reduce__()[0]
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as the official (numpy 1) pickles name it
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,  # as numpy >= 2 names it
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


def load_batch(raw: bytes, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one verified batch's bytes.

    Raises:
        DataError: If the pickle names anything a batch does not hold, or is damaged.
    """
    try:
        batch = BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except _Refused as refused:
        raise DataError(
            f"CIFAR-10 batch {name} asks to load {refused}, which a CIFAR-10 batch never holds; it was refused "
            "(the file is not the official one): delete it and run `fedsim data prepare cifar10`"
        ) from None
    except Exception as err:  # noqa: BLE001 - any damage to the pickle is the same user problem
        raise DataError(f"CIFAR-10 batch {name} is damaged ({err.__class__.__name__}); download it again") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise DataError(f"CIFAR-10 batch {name} has no uint8 'data' array of 3072 pixels per image; download it again")
    if not (isinstance(labels, list) and len(labels) == len(data) and all(type(v) is int for v in labels)):
        raise DataError(f"CIFAR-10 batch {name} has no list of {len(data)} integer 'labels'; download it again")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _verified(raw: bytes, *, what: str, expected: str, fix: str) -> bytes:
    got = hashlib.sha256(raw).hexdigest()
    if got != expected.lower():
        raise DataError(
            f"{what} has sha256 {got}, not the expected {expected.lower()}; it was not read "
            f"(damaged or not the official file): {fix}"
        )
    return raw


def _read_batches(
    kind: str, files: list[Path], *, tarball_sha256: str | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Verify, then unpickle, the six batches (from the folder, or from the tarball in memory)."""
    wanted = (*TRAIN_BATCHES, TEST_BATCH)
    if kind == "folder":
        out = {}
        for path in files:
            fix = f"delete {path.parent} and run `fedsim data prepare cifar10 --root {path.parent.parent}`"
            raw = _verified(path.read_bytes(), what=f"CIFAR-10 file {path}", expected=BATCH_SHA256[path.name], fix=fix)
            out[path.name] = load_batch(raw, name=path.name)
        return out
    tarball = files[0]
    expected = tarball_sha256 or os.environ.get(SHA256_ENV) or TARBALL_SHA256
    fix = f"delete it and run `fedsim data prepare cifar10 --root {tarball.parent}` (or name its sha256 with --sha256)"
    raw = _verified(tarball.read_bytes(), what=str(tarball), expected=expected, fix=fix)
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = Path(member.name).name
                if name in wanted and member.isfile():
                    members[name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(
            f"{tarball} is not a readable CIFAR-10 tarball ({err.__class__.__name__}); download it again"
        ) from None
    missing = [name for name in wanted if name not in members]
    if missing:
        raise DataError(f"{tarball} lacks {FOLDER}/{missing[0]}; download it again with `fedsim data prepare cifar10`")
    return {name: load_batch(members[name], name=name) for name in wanted}


def prepare(root: Path, *, out: Path | None = None, force: bool = False, tarball_sha256: str | None = None) -> Path:
    """Prepare CIFAR-10 under ``root`` once; returns the prepared folder.

    ``tarball_sha256`` names the expected sha256 of a tarball that is not the official
    one (default: ``FEDSIM_CIFAR10_SHA256``, else the official digest).
    """
    root = Path(root)
    kind, files = find_source(root)
    folder = Path(out) if out is not None else store.prepared_dir(root, f"{KIND}-{kind}")
    params = {"source": kind}
    if not force and store.is_current(folder, kind=KIND, sources=files, params=params):
        return folder
    batches = _read_batches(kind, files, tarball_sha256=tarball_sha256)
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


class Cifar10Dataset(PartitionedDataset):
    """CIFAR-10 training images split among users (Dirichlet over labels, or IID).

    Takes ``FederatedDataset``'s arguments (``root``: the folder with the tarball or
    ``cifar-10-batches-py/``); ``data.options``: ``Cifar10Options`` (``partition``,
    ``alpha``, ``max_samples``: a cap on a user's images, a random subset).
    """

    name = "cifar10"
    num_classes = 10
    input_shape = (3, 32, 32)
    input_kind = "float"
    options: Cifar10Options

    def _build(self) -> None:
        self._store = store.UserStore(prepare(self.root))
        self._partition(np.asarray(self._store.array("y"), dtype=np.int64))
        self._mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(STD).view(1, 3, 1, 1)

    def _samples(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.asarray(self._store.array("x")[rows])).float().div_(255.0)
        labels = torch.from_numpy(np.asarray(self._store.array("y")[rows], dtype=np.int64))
        return (images - self._mean) / self._std, labels
