"""Read LEAF's own JSON output, so existing LEAF data is used directly.

LEAF (Caldas et al. 2018) writes one or more JSON files per split, each
``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``
(optionally ``"hierarchies"``). Its folder layout is ``data/train/*.json`` and
``data/test/*.json``; fedsim also accepts the files side by side in one folder (``leaf/``
or the data root) when their names say ``train`` / ``test``, and unsplit ``all_data``
files (then fedsim draws the per-user split itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.errors import DataError

#: sub-folders of a data root searched for LEAF JSON, in order
LEAF_FOLDERS = ("leaf", "data", ".")


@dataclass
class LeafUser:
    """One LEAF user's samples; ``test`` flags the ones from a test file."""

    x: list[Any] = field(default_factory=list)
    y: list[Any] = field(default_factory=list)
    test: list[bool] = field(default_factory=list)


def _role(path: Path) -> str:
    parts = [p.lower() for p in path.parts[-2:]]
    if "test" in parts[0] or "test" in path.stem.lower():
        return "test"
    if "train" in parts[0] or "train" in path.stem.lower():
        return "train"
    return "all"


def find_leaf_files(root: Path) -> list[Path]:
    """LEAF JSON files under ``root`` (``leaf/``, ``data/{train,test}/``, or ``root`` itself).

    Returns the files of the first of those places that has any, sorted by name.
    """
    root = Path(root)
    for sub in LEAF_FOLDERS:
        folder = root / sub
        if not folder.is_dir():
            continue
        files = sorted(folder.glob("*.json")) + sorted(folder.glob("train/*.json")) + sorted(folder.glob("test/*.json"))
        files = [f for f in files if f.name != "meta.json" and _looks_like_leaf(f)]
        if files:
            return files
    return []


def _looks_like_leaf(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return b'"users"' in head or b'"user_data"' in head or b'"num_samples"' in head


def read_leaf(files: list[Path]) -> tuple[list[str], dict[str, LeafUser]]:
    """Merge LEAF JSON files into users (in first-seen order) and their samples.

    Samples of files named or placed under ``test`` are flagged ``test``; when no test
    file is given no sample is flagged (the caller then draws a split).

    Raises:
        DataError: If a file is not valid LEAF JSON.
    """
    order: list[str] = []
    users: dict[str, LeafUser] = {}
    for path in files:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read LEAF JSON {path}: {err.__class__.__name__}; re-create it with LEAF") from None
        if not isinstance(doc, dict) or not {"users", "num_samples", "user_data"} <= doc.keys():
            raise DataError(f"{path} is not LEAF JSON (it needs the keys users, num_samples, user_data)")
        if len(doc["users"]) != len(doc["num_samples"]):
            raise DataError(f"{path}: 'users' and 'num_samples' differ in length; the file is damaged")
        is_test = _role(Path(path)) == "test"
        for name, count in zip(doc["users"], doc["num_samples"]):
            data = doc["user_data"].get(name)
            # LEAF's Shakespeare test files count the 79 windows it drops between a user's
            # train and test text in num_samples, so the lists are what counts.
            if data is None or len(data.get("x", ())) != len(data.get("y", ())) or len(data.get("y", ())) > count:
                raise DataError(
                    f"{path}: user {name!r} has no matching x and y lists (at most num_samples={count}) in user_data"
                )
            count = len(data["y"])
            user = users.get(str(name))
            if user is None:
                user = users[str(name)] = LeafUser()
                order.append(str(name))
            user.x.extend(data["x"])
            user.y.extend(data["y"])
            user.test.extend([is_test] * count)
    return order, users
