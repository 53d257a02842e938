"""``fedsim data prepare NAME``: fetch the raw files (where allowed), verify them, convert once.

Official sources (override the address with ``--url`` or ``FEDSIM_<NAME>_URL``, e.g. a
mirror or a local server; override the expected checksum with ``--sha256`` or
``FEDSIM_<NAME>_SHA256``):

| name | file | from | sha256 |
|---|---|---|---|
| sent140 | trainingandtestdata.zip (holds training.1600000.processed.noemoticon.csv) | Stanford (Go et al.) | pinned |
| cifar10 | cifar-10-python.tar.gz | University of Toronto (Krizhevsky) | pinned |
| shakespeare | pg100.txt | Project Gutenberg eBook #100 | not pinned: Gutenberg revises the file; the hash fetched is recorded and printed, pin it with --sha256 |
| celeba | - | placed by hand under CelebA's terms | - |

A download goes to ``NAME.part`` beside its destination and is renamed into place only
after its sha256 matched, so a damaged or substituted file is never kept. CIFAR-10's
batches are pickles: ``fedsim.data.cifar10`` checks the tarball's (or each extracted
file's) sha256 again before it unpickles anything, with an allow-list unpickler.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.data import celeba, cifar10, sent140, shakespeare
from fedsim.data.store import UserStore
from fedsim.errors import DataError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Source:
    """One raw file that ``fedsim data prepare`` may download."""

    file: str
    url: str
    sha256: str | None


SOURCES: dict[str, Source | None] = {
    "sent140": Source(
        file=sent140.ZIP_NAME,
        url="http://cs.stanford.edu/people/alecmgo/trainingandtestdata.zip",
        sha256="004a3772c8a7ff9bbfeb875880f47f0679d93fc63e5cf9cff72d54a8a6162e57",
    ),
    "cifar10": Source(
        file=cifar10.TARBALL,
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256=cifar10.TARBALL_SHA256,
    ),
    "shakespeare": Source(file="pg100.txt", url="https://www.gutenberg.org/cache/epub/100/pg100.txt", sha256=None),
    "celeba": None,
}

_FIND = {
    "sent140": lambda root: sent140.find_source(root),
    "shakespeare": lambda root: shakespeare.find_source(root),
    "cifar10": lambda root: cifar10.find_source(root),
    "celeba": lambda root: celeba.find_source(root),
}
_PREPARE = {
    "sent140": sent140.prepare,
    "shakespeare": shakespeare.prepare,
    "cifar10": cifar10.prepare,
    "celeba": celeba.prepare,
}


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(*, url: str, dest: Path, sha256: str | None, timeout: float = 60.0, command: str | None = None) -> str:
    """Fetch ``url`` to ``dest`` through ``dest.part``; keep it only if its sha256 matches.

    Returns:
        The sha256 of the kept file.

    Raises:
        DataError: If the download fails or the checksum differs (the part file is removed).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "fedsim"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as err:
        part.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        raise DataError(
            f"cannot download {dest.name} from {url} ({str(reason).splitlines()[0] if str(reason) else type(err).__name__}); "
            f"fetch it on a machine with internet and place it at {dest}"
            + (f", then run `{command}`" if command else ", or pass another --url")
        ) from None
    got = digest.hexdigest()
    if sha256 is not None and got != sha256.lower():
        part.unlink(missing_ok=True)
        raise DataError(
            f"{dest.name} from {url} has sha256 {got}, expected {sha256.lower()}; the file was not kept "
            "(damaged or not the official file: retry, or check --url)"
        )
    os.replace(part, dest)
    return got


def _have_raw(name: str, root: Path) -> bool:
    try:
        _FIND[name](root)
        return True
    except DataError:
        return False


def prepare_dataset(
    name: str,
    *,
    root: Path,
    url: str | None = None,
    sha256: str | None = None,
    download_missing: bool = True,
    force: bool = False,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fetch (if needed and allowed), verify and prepare a data set under ``root``.

    Args:
        name: ``sent140``, ``shakespeare``, ``cifar10`` or ``celeba``.
        root: Data folder (created if missing).
        url: Download address instead of the official one (or ``FEDSIM_<NAME>_URL``).
        sha256: Expected checksum instead of the pinned one (or ``FEDSIM_<NAME>_SHA256``).
        download_missing: Download when the raw files are absent.
        force: Prepare again even if an up-to-date preparation exists.
        options: Preparation options of the data set (e.g. sent140's ``max_words``).

    Returns:
        A summary: name, root, prepared folder, users, rows, downloaded file and its sha256.

    Raises:
        DataError: One line naming the missing or bad file, where it goes and the fix.
    """
    if name not in _PREPARE:
        raise DataError(f"unknown data set {name!r} to prepare; known: {', '.join(sorted(_PREPARE))}")
    root = Path(root)
    env = name.upper()
    source = SOURCES[name]
    url = url or os.environ.get(f"FEDSIM_{env}_URL") or (source.url if source else None)
    expected = sha256 or os.environ.get(f"FEDSIM_{env}_SHA256") or (source.sha256 if source else None)
    fetched: dict[str, Any] = {}
    if source is not None:
        dest = root / source.file
        if dest.is_file() and expected is not None:
            got = sha256_of(dest)
            if got != expected.lower():
                raise DataError(
                    f"{dest} has sha256 {got}, expected {expected.lower()}; it is not the official file: "
                    f"delete it and run `fedsim data prepare {name} --root {root}`"
                )
            fetched = {"file": str(dest), "sha256": got, "downloaded": False}
        elif not _have_raw(name, root):
            if not download_missing:
                _FIND[name](root)  # raises the one-line "not found" error
            root.mkdir(parents=True, exist_ok=True)
            got = download(url=url, dest=dest, sha256=expected, command=f"fedsim data prepare {name} --root {root}")
            fetched = {"file": str(dest), "sha256": got, "downloaded": True, "url": url}
    options = dict(options or {})
    if name == "cifar10" and expected is not None:
        options["tarball_sha256"] = expected  # its members are pickles: read only from the tarball verified here
    folder = _PREPARE[name](root, force=force, **options)
    prepared = UserStore(folder)
    summary = {
        "name": name,
        "root": str(root),
        "prepared": str(folder),
        "users": len(prepared.users),
        "rows": int(prepared.offsets[-1]),
        **fetched,
    }
    (Path(folder) / "prepared-by.json").write_text(json.dumps(summary, indent=1))
    return summary
