"""CIFAR-10 and CelebA loaders on tiny fake trees in the real on-disk layouts."""

import pickle

import numpy as np
import pytest
import torch

from fedsim.data import CelebaDataset, Cifar10Dataset, make_dataset
from fedsim.data import cifar10 as cifar_mod
from fedsim.errors import DataError
from tests.fixtures.fake_datasets import write_fake_celeba, write_fake_cifar10


def _raw_cifar(root):
    xs, ys = [], []
    for name in cifar_mod.TRAIN_BATCHES:
        batch = pickle.loads((root / cifar_mod.FOLDER / name).read_bytes(), encoding="bytes")  # the test's own file
        xs.append(batch[b"data"].reshape(-1, 3, 32, 32))
        ys += batch[b"labels"]
    return np.concatenate(xs), np.array(ys)


@pytest.mark.parametrize("tarball", [False, True])
def test_cifar10_images_are_partitioned_once_and_normalised(tmp_path, fake_cifar10, tarball):
    write_fake_cifar10(tmp_path / "copy", images_per_batch=40)  # the same images, to compare with
    raw_x, raw_y = _raw_cifar(tmp_path / "copy")
    fake_cifar10(tmp_path, images_per_batch=40, tarball=tarball)
    assert (tmp_path / cifar_mod.FOLDER).exists() != tarball
    ds = make_dataset(
        name="cifar10",
        num_clients=8,
        design_pool=2,
        test_fraction=0.25,
        seed=0,
        root=str(tmp_path),
        options={"partition": "iid"},
    )
    assert (ds.num_classes, ds.input_shape, ds.input_kind) == (10, (3, 32, 32), "float")
    users = [ds.client(c) for c in range(10)]
    assert sum(u.num_train + u.num_test for u in users) == 200
    mean = torch.tensor(cifar_mod.MEAN).view(1, 3, 1, 1)
    std = torch.tensor(cifar_mod.STD).view(1, 3, 1, 1)
    pixels = torch.cat([torch.cat([u.x_train, u.x_test]) for u in users]) * std + mean
    labels = torch.cat([torch.cat([u.y_train, u.y_test]) for u in users])
    got = sorted(
        (bytes((p * 255).round().to(torch.uint8).numpy().tobytes()), int(label)) for p, label in zip(pixels, labels)
    )
    want = sorted((x.tobytes(), int(label)) for x, label in zip(raw_x, raw_y))
    assert got == want
    assert ds.num_train_samples(3) == users[3].num_train


def test_cifar10_dirichlet_is_label_skewed_and_missing_files_are_named(tmp_path, fake_cifar10):
    fake_cifar10(tmp_path, images_per_batch=200)
    skewed = Cifar10Dataset(num_clients=10, design_pool_size=0, root=str(tmp_path), alpha=0.1, seed=0)
    iid = Cifar10Dataset(num_clients=10, design_pool_size=0, root=str(tmp_path), partition="iid", seed=0)

    def share_of_top_label(ds):
        return np.mean(
            [np.bincount(ds.client(c).y_train.numpy(), minlength=10).max() / ds.client(c).num_train for c in range(10)]
        )

    assert share_of_top_label(skewed) > share_of_top_label(iid) + 0.2
    (tmp_path / cifar_mod.FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="cifar-10-batches-py/data_batch_3 not found"):
        Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cifar-10-python.tar.gz not found"):
        Cifar10Dataset(num_clients=2, design_pool_size=0, root=str(tmp_path / "empty"))


def test_celeba_clients_are_celebrities_labelled_smiling(tmp_path):
    pytest.importorskip("PIL")
    from fedsim.data import celeba as celeba_mod

    write_fake_celeba(tmp_path, celebrities=5, images_each=4)
    identity = dict(line.split() for line in (tmp_path / celeba_mod.IDENTITY).read_text().splitlines())
    lines = (tmp_path / celeba_mod.ATTRIBUTES).read_text().splitlines()
    column = lines[1].split().index("Smiling") + 1
    smiling = {line.split()[0]: int(line.split()[column] == "1") for line in lines[2:]}
    ds = CelebaDataset(num_clients=4, design_pool_size=1, root=str(tmp_path), test_fraction=0.25, seed=0)
    assert (ds.num_classes, ds.input_shape) == (2, (3, 84, 84))
    assert {ds.user_name(c) for c in range(5)} == set(identity.values())
    for cid in range(5):
        data = ds.client(cid)
        assert (data.num_train, data.num_test) == (3, 1) and ds.num_train_samples(cid) == 3
        assert data.x_train.shape == (3, 3, 84, 84) and 0 <= data.x_train.min() and data.x_train.max() <= 1
        files = [f for f, who in identity.items() if who == ds.user_name(cid)]
        assert sorted(torch.cat([data.y_train, data.y_test]).tolist()) == sorted(smiling[f] for f in files)
    (tmp_path / celeba_mod.IDENTITY).unlink()
    with pytest.raises(DataError, match="identity_CelebA.txt not found"):
        CelebaDataset(num_clients=1, design_pool_size=0, root=str(tmp_path))
