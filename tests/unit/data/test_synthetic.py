"""Tests for fedsim.data.synthetic and the data-set registry."""

import numpy as np
import pytest
import torch

from fedsim.data import DigitsDataset, FederatedDataset, SyntheticDataset, make_dataset
from fedsim.errors import DataError


def label_skew(ds: SyntheticDataset, ids: range) -> float:
    """Mean total-variation distance of users' label histograms from the pooled one."""
    hists = np.stack([np.bincount(ds.client(k).y_train.numpy(), minlength=ds.num_classes) for k in ids])
    pooled = hists.sum(0) / hists.sum()
    per_user = hists / hists.sum(1, keepdims=True)
    return float(np.mean(0.5 * np.abs(per_user - pooled).sum(1)))


def feature_mean_spread(ds: SyntheticDataset, ids: range) -> float:
    """Mean over features of the across-user standard deviation of per-user feature means."""
    means = np.stack([ds.client(k).x_train.mean(0).numpy() for k in ids])
    return float(means.std(0).mean())


def assert_same(a, b) -> None:
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_is_a_federated_dataset_with_declared_shapes():
    ds = SyntheticDataset(num_clients=5, design_pool_size=2, dim=7, num_classes=4)
    assert isinstance(ds, FederatedDataset)
    assert ds.name == "synthetic"
    assert ds.input_shape == (7,)
    assert ds.input_kind == "float"
    assert ds.num_classes == 4
    for k in range(7):
        c = ds.client(k)
        assert c.x_train.dtype == torch.float32 and c.y_train.dtype == torch.int64
        assert c.x_train.shape == (c.num_train, 7) and c.x_test.shape == (c.num_test, 7)
        labels = torch.cat([c.y_train, c.y_test])
        assert labels.min() >= 0 and labels.max() < 4


def test_non_iid_users_differ_much_more_than_iid_users():
    users = range(60)
    non_iid = SyntheticDataset(num_clients=60, design_pool_size=0, alpha=1.0, beta=1.0)
    iid = SyntheticDataset(num_clients=60, design_pool_size=0, iid=True)
    # synthetic(1, 1): each user's private model makes a few classes dominate
    assert label_skew(non_iid, users) > 0.5
    assert label_skew(non_iid, users) > 3 * label_skew(iid, users)
    # v_k ~ N(B_k, 1) per user versus one shared N(0, Sigma)
    assert feature_mean_spread(non_iid, users) > 0.8
    assert feature_mean_spread(non_iid, users) > 10 * feature_mean_spread(iid, users)


def test_iid_users_share_one_labelling_model():
    # with a shared W, b every user's label histogram is close to the pooled one
    ds = SyntheticDataset(num_clients=40, design_pool_size=0, iid=True, min_samples=200)
    assert label_skew(ds, range(40)) < 0.15


def test_feature_covariance_is_diagonal_power_law():
    ds = SyntheticDataset(num_clients=1, design_pool_size=0, min_samples=4000, max_samples=4000, test_fraction=0.0)
    x = ds.client(0).x_train.numpy().astype(np.float64)
    var = x.var(0)
    # Sigma_jj = j^-1.2 (1-based): 1.0 for the first feature, 60^-1.2 = 0.0074 for the last
    np.testing.assert_allclose(var[[0, 1, 59]], [1.0, 2**-1.2, 60**-1.2], rtol=0.1)
    corr = np.corrcoef(x[:, :5], rowvar=False)
    assert np.abs(corr - np.eye(5)).max() < 0.1


def test_sizes_are_heavy_tailed_and_within_bounds():
    ds = SyntheticDataset(num_clients=2000, design_pool_size=0, sigma_log_samples=1.5)
    totals = np.array([ds.num_samples(k) for k in range(2000)])
    assert totals.min() >= 10 and totals.max() <= 1000
    assert totals.max() > 5 * np.median(totals)
    assert (totals == 1000).any()  # the cap binds in a heavy tail


def test_size_formula_without_spread():
    # sigma 0: every user has min_samples + floor(e^mean) = 10 + floor(e^3) = 30 samples
    ds = SyntheticDataset(num_clients=3, design_pool_size=1, mean_log_samples=3.0, sigma_log_samples=0.0)
    for k in range(4):
        c = ds.client(k)
        assert (c.num_train, c.num_test) == (24, 6)  # test_fraction 0.2 of 30


def test_num_train_samples_matches_loaded_client():
    ds = SyntheticDataset(num_clients=30, design_pool_size=5, test_fraction=0.3, seed=2)
    for k in range(35):
        assert ds.num_train_samples(k) == ds.client(k).num_train


def test_test_fraction_is_respected():
    ds = SyntheticDataset(num_clients=30, design_pool_size=0, test_fraction=0.25)
    for k in range(30):
        c = ds.client(k)
        n = c.num_train + c.num_test
        assert abs(c.num_test - 0.25 * n) <= 0.5 + 1e-9
        assert c.num_train >= 1 and c.num_test >= 1


def test_same_seed_same_tensors_whatever_the_loading_order():
    a = SyntheticDataset(num_clients=20, design_pool_size=5, seed=11)
    b = SyntheticDataset(num_clients=20, design_pool_size=5, seed=11)
    first = [a.client(k) for k in range(25)]
    for k in reversed(range(25)):
        assert_same(b.client(k), first[k])
    assert_same(a.client(3), first[3])  # loading again gives the same data


def test_iid_variant_is_reproducible_across_instances():
    a = SyntheticDataset(num_clients=5, design_pool_size=0, iid=True, seed=4)
    b = SyntheticDataset(num_clients=5, design_pool_size=0, iid=True, seed=4)
    assert_same(a.client(4), b.client(4))


def test_different_seeds_and_users_differ():
    a = SyntheticDataset(num_clients=5, design_pool_size=0, seed=0)
    b = SyntheticDataset(num_clients=5, design_pool_size=0, seed=1)
    assert not torch.equal(a.client(0).x_train[:5], b.client(0).x_train[:5])
    assert not torch.equal(a.client(0).x_train[:5], a.client(1).x_train[:5])


def test_large_population_is_lazy():
    # a billion users: only feasible if nothing is generated per user up front
    ds = SyntheticDataset(num_clients=10**9, design_pool_size=10**6)
    last = ds.num_clients + ds.design_pool_size - 1
    assert ds.client(last).num_train == ds.num_train_samples(last) >= 1


def test_design_pool_is_disjoint_and_loadable():
    ds = SyntheticDataset(num_clients=10, design_pool_size=3)
    pool = ds.design_pool_ids()
    assert pool == [10, 11, 12]
    assert not set(pool) & set(range(ds.num_clients))
    assert ds.client(12).num_train >= 1


@pytest.mark.parametrize("cid", [-1, 13, 10**6])
def test_out_of_range_client_id_raises(cid):
    ds = SyntheticDataset(num_clients=10, design_pool_size=3)
    with pytest.raises(DataError, match="out of range"):
        ds.client(cid)
    with pytest.raises(DataError, match="out of range"):
        ds.num_train_samples(cid)


@pytest.mark.parametrize(
    "bad",
    [
        {"alpha": -1.0},
        {"beta": -0.5},
        {"min_samples": 0},
        {"min_samples": 50, "max_samples": 20},
        {"test_fraction": 1.0},
        {"num_classes": 1},
        {"seed": -3},
    ],
)
def test_invalid_options_raise_data_error_naming_the_option(bad):
    with pytest.raises(DataError) as err:
        SyntheticDataset(num_clients=5, design_pool_size=0, **bad)
    assert any(key in str(err.value) for key in bad)


# --- registry -------------------------------------------------------------------------


def test_make_dataset_builds_synthetic_with_options():
    ds = make_dataset(
        name="synthetic",
        num_clients=7,
        design_pool=2,
        test_fraction=0.1,
        seed=5,
        options={"alpha": 0.5, "dim": 12},
    )
    assert isinstance(ds, SyntheticDataset)
    assert (ds.num_clients, ds.design_pool_size, ds.options.alpha, ds.seed) == (7, 2, 0.5, 5)
    assert ds.client(8).x_train.shape[1] == 12
    direct = SyntheticDataset(num_clients=7, design_pool_size=2, test_fraction=0.1, seed=5, alpha=0.5, dim=12)
    assert_same(ds.client(3), direct.client(3))


def test_make_dataset_builds_digits():
    ds = make_dataset(
        name="digits",
        num_clients=4,
        design_pool=1,
        test_fraction=0.2,
        seed=0,
        options={"partition": "iid"},
    )
    assert isinstance(ds, DigitsDataset)
    assert ds.design_pool_ids() == [4]


def test_make_dataset_unknown_name_lists_known_ones():
    with pytest.raises(DataError, match="unknown data set 'mnist'") as err:
        make_dataset(name="mnist", num_clients=2, design_pool=0, test_fraction=0.2, seed=0)
    assert "digits" in str(err.value) and "synthetic" in str(err.value)


def test_make_dataset_unknown_option_names_it_and_the_allowed_ones():
    with pytest.raises(DataError, match="data.options.alhpa") as err:
        make_dataset(
            name="synthetic",
            num_clients=2,
            design_pool=0,
            test_fraction=0.2,
            seed=0,
            options={"alhpa": 0.5},
        )
    message = str(err.value)
    assert "did you mean 'data.options.alpha'?" in message
    assert "alpha" in message and "beta" in message and "\n" not in message


def test_make_dataset_refuses_common_settings_in_options():
    with pytest.raises(DataError, match="data.options.seed.*scenario key 'seed'"):
        make_dataset(
            name="synthetic",
            num_clients=2,
            design_pool=0,
            test_fraction=0.2,
            seed=0,
            options={"seed": 3},
        )


def test_make_dataset_wrong_option_type_is_a_data_error():
    with pytest.raises(DataError, match="data.options.alpha.*'high'"):
        make_dataset(
            name="synthetic",
            num_clients=2,
            design_pool=0,
            test_fraction=0.2,
            seed=0,
            options={"alpha": "high"},
        )


def test_every_registered_data_set_has_a_loader_that_matches_its_declared_options():
    from fedsim.data import DATA_OPTIONS, dataset_class

    for name, options in DATA_OPTIONS.items():
        cls = dataset_class(name)
        assert cls.name == name
        assert (cls.input_kind == "long") == (options.inputs == "tokens"), name
        shape = getattr(cls, "input_shape", None)
        if shape is not None:
            assert (len(shape) == 3) == (options.inputs == "images"), name
    with pytest.raises(DataError, match="did you mean 'digits'"):
        dataset_class("digit")
