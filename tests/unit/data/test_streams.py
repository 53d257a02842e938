"""The data sets' random generators: one per (seed, stream, key), never shared."""

import itertools

import numpy as np
import torch

from fedsim import seeding
from fedsim.data import DigitsDataset
from fedsim.seeding import keyed_rng


def _first(rng: np.random.Generator) -> tuple[int, ...]:
    return tuple(rng.integers(0, 2**63, size=4).tolist())


def test_distinct_keys_give_distinct_generators_and_equal_keys_equal_ones():
    keys = [
        (0, seeding.DATA_SPLIT, ()),
        (0, seeding.DATA_SPLIT, (0,)),  # a trailing zero is a different key
        (0, seeding.DATA_SPLIT, (0, 0)),
        (0, seeding.DATA_SPLIT, (1,)),
        (0, seeding.DATA_SUBSET, (1,)),
        (1, seeding.DATA_SPLIT, (1,)),
        (2**32 + 5, seeding.DATA_SPLIT, ()),  # a large seed is not read as two small numbers
        (5, 1, (seeding.DATA_SPLIT,)),
    ]
    draws = [_first(keyed_rng(seed=seed, stream=stream, key=key)) for seed, stream, key in keys]
    assert len(set(draws)) == len(keys)
    assert _first(keyed_rng(seed=7, stream=seeding.DATA_PARTITION, key=(3,))) == _first(
        keyed_rng(seed=7, stream=seeding.DATA_PARTITION, key=(3,))
    )


def test_data_streams_are_distinct_from_each_other_and_from_the_round_streams():
    streams = [value for name, value in vars(seeding).items() if name.isupper()]
    assert len(streams) == len(set(streams))
    data = [value for name, value in vars(seeding).items() if name.startswith("DATA_")]
    rounds = {seeding.SAMPLING, seeding.NOISE, seeding.CLIENT, seeding.EVALUATION, seeding.AUDIT}
    assert data and not set(data) & rounds


def test_a_users_samples_do_not_depend_on_the_order_users_are_loaded():
    a = DigitsDataset(num_clients=6, design_pool_size=2, seed=3)
    b = DigitsDataset(num_clients=6, design_pool_size=2, seed=3)
    first = {cid: a.client(cid) for cid in range(8)}
    for cid in itertools.chain(reversed(range(8)), range(8)):
        again = b.client(cid)
        assert torch.equal(again.x_train, first[cid].x_train) and torch.equal(again.y_test, first[cid].y_test)
