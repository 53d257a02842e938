"""Tests for fedsim.data.digits."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fedsim.data import DigitsDataset, FederatedDataset
from fedsim.errors import DataError


@pytest.fixture(scope="module")
def raw():
    return load_digits()


def all_users(ds: DigitsDataset):
    return [ds.client(k) for k in range(ds.num_clients + ds.design_pool_size)]


def label_skew(clients) -> float:
    hists = np.stack([np.bincount(torch.cat([c.y_train, c.y_test]).numpy(), minlength=10) for c in clients])
    pooled = hists.sum(0) / hists.sum()
    per_user = hists / hists.sum(1, keepdims=True)
    return float(np.mean(0.5 * np.abs(per_user - pooled).sum(1)))


@pytest.mark.parametrize("partition", ["dirichlet", "iid"])
def test_every_image_is_used_exactly_once(raw, partition):
    ds = DigitsDataset(num_clients=15, design_pool_size=5, partition=partition)
    users = all_users(ds)
    x = torch.cat([t for c in users for t in (c.x_train, c.x_test)])
    y = torch.cat([t for c in users for t in (c.y_train, c.y_test)])
    assert x.shape == (1797, 1, 8, 8)
    # the same multiset of (image, label) pairs as the raw data
    got = sorted((img.tobytes(), int(lbl)) for img, lbl in zip((x.numpy() * 16).round().astype(np.int8), y.numpy()))
    want = sorted(
        (img.reshape(1, 8, 8).astype(np.int8).tobytes(), int(lbl)) for img, lbl in zip(raw.images, raw.target)
    )
    assert got == want


def test_images_are_scaled_float_tensors(raw):
    ds = DigitsDataset(num_clients=5, design_pool_size=0)
    assert isinstance(ds, FederatedDataset)
    assert (ds.name, ds.num_classes, ds.input_shape, ds.input_kind) == ("digits", 10, (1, 8, 8), "float")
    x = torch.cat([c.x_train for c in all_users(ds)])
    y = torch.cat([c.y_train for c in all_users(ds)])
    assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
    assert x.min() == 0.0 and x.max() == 1.0  # raw pixels span 0..16
    assert torch.equal(x * 16, (x * 16).round())  # multiples of 1/16
    assert y.dtype == torch.int64 and y.min() == 0 and y.max() == 9


def test_dirichlet_partition_is_label_skewed_and_iid_is_not():
    skewed = DigitsDataset(num_clients=20, design_pool_size=0, partition="dirichlet", alpha=0.1)
    iid = DigitsDataset(num_clients=20, design_pool_size=0, partition="iid")
    assert label_skew(all_users(skewed)) > 0.5
    assert label_skew(all_users(iid)) < 0.15


def test_num_train_samples_and_test_fraction():
    ds = DigitsDataset(num_clients=12, design_pool_size=3, test_fraction=0.25, seed=1)
    for k in range(15):
        c = ds.client(k)
        n = c.num_train + c.num_test
        assert ds.num_train_samples(k) == c.num_train
        assert abs(c.num_test - 0.25 * n) <= 0.5 + 1e-9
        assert c.num_train >= 1 and c.num_test >= 1


def test_deterministic_in_seed():
    a = DigitsDataset(num_clients=10, design_pool_size=2, seed=3)
    b = DigitsDataset(num_clients=10, design_pool_size=2, seed=3)
    c = DigitsDataset(num_clients=10, design_pool_size=2, seed=4)
    for k in (11, 0, 5):  # any order
        assert torch.equal(a.client(k).x_train, b.client(k).x_train)
        assert torch.equal(a.client(k).y_test, b.client(k).y_test)
    assert not torch.equal(a.client(0).y_train, c.client(0).y_train)


def test_design_pool_users_are_separate_and_loadable():
    ds = DigitsDataset(num_clients=8, design_pool_size=2)
    assert ds.design_pool_ids() == [8, 9]
    train_x = torch.cat([ds.client(k).x_train for k in range(8)])
    pool_x = ds.client(9).x_train
    assert pool_x.shape[0] >= 1
    assert train_x.shape[0] + sum(ds.client(k).num_train for k in (8, 9)) <= 1797


@pytest.mark.parametrize("cid", [-1, 10, 1797])
def test_out_of_range_client_id_raises(cid):
    ds = DigitsDataset(num_clients=8, design_pool_size=2)
    with pytest.raises(DataError, match="out of range"):
        ds.client(cid)


def test_too_many_users_raises_data_error():
    with pytest.raises(DataError, match="lower data.num_clients"):
        DigitsDataset(num_clients=1790, design_pool_size=10, partition="iid")
    with pytest.raises(DataError, match="lower data.num_clients"):
        DigitsDataset(num_clients=900, design_pool_size=0, partition="dirichlet")


def test_unknown_partition_raises_naming_the_option():
    with pytest.raises(DataError, match="data.options.partition") as err:
        DigitsDataset(num_clients=5, design_pool_size=0, partition="shards")
    assert "'shards'" in str(err.value) and "dirichlet" in str(err.value)
