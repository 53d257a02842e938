"""CelebA (Liu et al. 2015), one client per celebrity, binary "Smiling", as in LEAF/CANIFE.

CelebA's terms forbid redistribution, so its files are placed by hand (from the official
CelebA page, "Align&Cropped Images" and "Anno"), under the data root:

```
ROOT/img_align_celeba/000001.jpg ...   (unzip img_align_celeba.zip here)
ROOT/identity_CelebA.txt               ("000001.jpg 2880": image, celebrity id)
ROOT/list_attr_celeba.txt              (count line, 40 attribute names, then one row per image of 1/-1)
```

LEAF's JSON output (``leaf/``, ``data/train|test/``: ``x`` image file names, ``y`` 0/1)
is read too; the images still come from ``img_align_celeba/``.

Preparation only indexes the images by celebrity (cheap); a client's JPEGs are decoded
(Pillow), resized to ``image_size`` (LEAF: 84) and scaled to [0, 1] when it trains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedsim.data import store
from fedsim.data.leaf import find_leaf_files, read_leaf
from fedsim.data.options import CelebaOptions
from fedsim.data.store import NaturalUsersDataset, UserStore
from fedsim.errors import DataError

KIND = "celeba"
IMAGES = "img_align_celeba"
IDENTITY = "identity_CelebA.txt"
ATTRIBUTES = "list_attr_celeba.txt"
ATTRIBUTE = "Smiling"
SOURCES = ("auto", "raw", "leaf")


def _hint(root: Path) -> str:
    return (
        f"CelebA cannot be downloaded under its terms: get {IMAGES}.zip (unzip to {IMAGES}/), {IDENTITY} and "
        f"{ATTRIBUTES} from the CelebA page and place them in {root}"
    )


def find_source(root: Path, *, source: str = "auto") -> tuple[str, list[Path]]:
    """``("leaf", json files)`` or ``("raw", [identity, attributes])``; checks the image folder."""
    root = Path(root)
    if source not in SOURCES:
        raise DataError(f"celeba option source={source!r} is unknown; use one of {SOURCES}")
    if not root.is_dir():
        raise DataError(f"CelebA data folder {root} does not exist; {_hint(root)}")
    if not (root / IMAGES).is_dir():
        raise DataError(f"CelebA folder {IMAGES}/ not found in {root}; {_hint(root)}")
    if source in ("auto", "leaf"):
        files = find_leaf_files(root)
        if files:
            return "leaf", files
        if source == "leaf":
            raise DataError(f"no LEAF JSON for celeba in {root}")
    for name in (IDENTITY, ATTRIBUTES):
        if not (root / name).is_file():
            raise DataError(f"CelebA file {name} not found in {root}; {_hint(root)}")
    return "raw", [root / IDENTITY, root / ATTRIBUTES]


def _read_raw(identity: Path, attributes: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids: dict[str, str] = {}
    for number, line in enumerate(identity.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{identity} line {number} is not 'IMAGE IDENTITY'; place the original file")
        ids[parts[0]] = parts[1]
    lines = attributes.read_text().splitlines()
    if len(lines) < 2 or ATTRIBUTE not in lines[1].split():
        raise DataError(f"{attributes} has no {ATTRIBUTE} column in its second line; place the original file")
    column = lines[1].split().index(ATTRIBUTE)
    files, users, labels = [], [], []
    for number, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(lines[1].split()) + 1:
            raise DataError(f"{attributes} line {number} has {len(parts) - 1} values, not one per attribute")
        if parts[0] not in ids:
            continue
        files.append(parts[0])
        users.append(ids[parts[0]])
        labels.append(1 if parts[column + 1] == "1" else 0)
    return np.asarray(files, dtype=str), np.asarray(users, dtype=str), np.asarray(labels, dtype=np.int8)


def prepare(root: Path, *, source: str = "auto", out: Path | None = None, force: bool = False) -> Path:
    """Index CelebA under ``root`` by celebrity once; returns the prepared folder."""
    root = Path(root)
    kind, files = find_source(root, source=source)
    folder = Path(out) if out is not None else store.prepared_dir(root, f"{KIND}-{kind}")
    params = {"source": kind, "attribute": ATTRIBUTE}
    if not force and store.is_current(folder, kind=KIND, sources=files, params=params):
        return folder
    is_test = None
    if kind == "leaf":
        order, data = read_leaf(files)
        names = np.asarray([f for u in order for f in data[u].x], dtype=str)
        users = np.asarray([u for u in order for _ in data[u].x], dtype=str)
        labels = np.asarray([int(float(v)) for u in order for v in data[u].y], dtype=np.int8)
        flags = np.asarray([t for u in order for t in data[u].test], dtype=bool)
        is_test = flags if flags.any() else None
    else:
        names, users, labels = _read_raw(*files)
    if len(names) == 0:
        raise DataError(f"no CelebA images are listed in {files[0]}")
    order_ = np.argsort(users, kind="stable")
    names, users, labels = names[order_], users[order_], labels[order_]
    uniq, starts = np.unique(users, return_index=True)
    arrays = {"x": names, "y": labels}
    if is_test is not None:
        arrays["is_test"] = is_test[order_]
    store.write_store(
        folder,
        kind=KIND,
        sources=files,
        params=params,
        users=[str(u) for u in uniq],
        offsets=np.append(starts, len(users)),
        arrays=arrays,
    )
    return folder


class CelebaDataset(NaturalUsersDataset):
    """CelebA faces, one client per celebrity, label = Smiling; images (3, size, size) in [0, 1].

    Takes ``FederatedDataset``'s arguments (``root``: the folder with ``img_align_celeba/``
    and the two annotation files); ``data.options``: ``CelebaOptions`` (``min_samples``,
    ``user_fraction``, ``max_samples``, ``image_size``: side of the resized square image
    (LEAF: 84), ``source``). LEAF JSON keeps its own split.
    """

    name = "celeba"
    num_classes = 2
    input_kind = "float"
    options: CelebaOptions

    def _build(self) -> None:
        size = self.options.image_size
        self.input_shape = (3, size, size)
        self._store = UserStore(prepare(self.root, source=self.options.source))
        self._has_split = self._store.has("is_test")
        self._select_users(self._store.counts)

    def _user_samples(self, user: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            from PIL import Image
        except ImportError:
            raise DataError("CelebA needs Pillow to decode its JPEGs; pip install pillow") from None
        size = (self.options.image_size, self.options.image_size)
        images = []
        for name in self._store.rows(user, "x"):
            path = self.root / IMAGES / str(name)
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB").resize(size, Image.BILINEAR), dtype=np.uint8)
            except OSError:
                raise DataError(
                    f"CelebA image {IMAGES}/{name} is missing or unreadable in {self.root}; {_hint(self.root)}"
                ) from None
            images.append(pixels)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        y = torch.from_numpy(self._store.rows(user, "y").astype(np.int64))
        return x, y

    def _user_test_mask(self, user: int) -> np.ndarray | None:
        return self._store.rows(user, "is_test") if self._has_split else None
