"""CIFAR-10's batches are pickles: nothing is unpickled unverified, and no pickle runs code."""

import hashlib
import os
import pickle

import numpy as np
import pytest

from fedsim.data import Cifar10Dataset
from fedsim.data import cifar10 as cifar_mod
from fedsim.data.cifar10 import load_batch
from fedsim.errors import DataError
from tests.fixtures.fake_datasets import py2_pickle, write_fake_cifar10


class _RunsCode:
    """A pickle payload that runs a shell command when it is unpickled."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Evaluates:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_batches_in_the_official_pickle_layout_load_as_arrays():
    data = np.arange(4 * 3072).astype(np.uint8).reshape(4, 3072)
    raw = py2_pickle({b"batch_label": b"b", b"labels": [3, 1, 4, 1], b"data": data, b"filenames": [b"a.png"] * 4})
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw  # as the official (numpy 1) files name it
    images, labels = load_batch(raw, name="data_batch_1")
    assert images.shape == (4, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(4, -1), data)
    np.testing.assert_array_equal(labels, [3, 1, 4, 1])


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_pickle_that_would_run_code_is_refused_by_the_unpickler(tmp_path, protocol):
    marker = tmp_path / "ran"
    payloads = [
        {b"data": _RunsCode(f"touch {marker}"), b"labels": []},
        _RunsCode(f"touch {marker}"),
        {b"data": _Evaluates(), b"labels": []},
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [1], b"x": np.load},  # numpy, but not an array
    ]
    for payload in payloads:
        with pytest.raises(DataError) as error:
            load_batch(pickle.dumps(payload, protocol=protocol), name="data_batch_1")
        message = _one_line(error)
        assert "data_batch_1" in message and "refused" in message and "never holds" in message
    assert not marker.exists()


def test_code_running_batch_is_refused_even_when_its_digest_is_trusted(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    digests = write_fake_cifar10(tmp_path / "data", images_per_batch=4)
    evil = pickle.dumps({b"data": _RunsCode(f"touch {marker}"), b"labels": []})
    (tmp_path / "data" / cifar_mod.FOLDER / "data_batch_2").write_bytes(evil)
    monkeypatch.setattr(cifar_mod, "BATCH_SHA256", {**digests, "data_batch_2": hashlib.sha256(evil).hexdigest()})
    with pytest.raises(DataError) as error:
        Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(tmp_path / "data"))
    assert "data_batch_2 asks to load posix.system" in _one_line(error)
    assert not marker.exists()
    assert not (tmp_path / "data" / "prepared").exists()


def test_a_tampered_batch_is_refused_before_it_is_unpickled(tmp_path, fake_cifar10):
    marker = tmp_path / "ran"
    root = tmp_path / "data"
    digests = fake_cifar10(root, images_per_batch=4)
    batch = root / cifar_mod.FOLDER / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _RunsCode(f"touch {marker}"), b"labels": []}))
    with pytest.raises(DataError) as error:
        Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(root))
    message = _one_line(error)
    assert str(batch) in message and digests["data_batch_3"] in message and "not read" in message
    assert hashlib.sha256(batch.read_bytes()).hexdigest() in message
    assert not marker.exists()
    assert not (root / "prepared").exists()


def test_an_extracted_folder_must_have_the_official_digests(tmp_path):
    write_fake_cifar10(tmp_path, images_per_batch=4)  # a valid layout, but not the official bytes
    with pytest.raises(DataError) as error:
        Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(tmp_path))
    message = _one_line(error)
    assert "data_batch_1" in message and cifar_mod.BATCH_SHA256["data_batch_1"] in message


def test_a_tarball_is_read_only_with_the_official_or_a_named_digest(tmp_path, monkeypatch):
    digest = write_fake_cifar10(tmp_path, images_per_batch=4, tarball=True)[cifar_mod.TARBALL]
    monkeypatch.delenv(cifar_mod.SHA256_ENV, raising=False)
    with pytest.raises(DataError) as error:
        Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(tmp_path))
    message = _one_line(error)
    assert cifar_mod.TARBALL in message and cifar_mod.TARBALL_SHA256 in message and digest in message
    assert not (tmp_path / "prepared").exists()
    monkeypatch.setenv(cifar_mod.SHA256_ENV, digest)  # a mirror the user vouches for
    assert Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(tmp_path)).client(1).num_train >= 1


def test_damaged_or_foreign_pickles_with_trusted_digests_are_one_line_errors():
    data = np.zeros((2, 3072), np.uint8)
    good = py2_pickle({b"data": data, b"labels": [1, 2]})
    cases = {
        good[: len(good) // 2]: "damaged",
        py2_pickle({b"labels": [1, 2]}): "'data' array",
        py2_pickle({b"data": data, b"labels": [1]}): "integer 'labels'",
        py2_pickle({b"data": np.zeros((2, 10), np.uint8), b"labels": [1, 2]}): "3072 pixels",
    }
    for raw, fragment in cases.items():
        with pytest.raises(DataError) as error:
            load_batch(raw, name="test_batch")
        assert fragment in _one_line(error) and "test_batch" in str(error.value)
