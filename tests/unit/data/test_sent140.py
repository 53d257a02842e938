"""Sent140 on the real 20k-row sample: users, tokens, LEAF JSON, training."""

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch

from fedsim.data import Sent140Dataset, make_dataset
from fedsim.data.text import PAD, UNK, split_words
from fedsim.errors import DataError


@pytest.fixture(scope="module")
def sent140_root(sample_data, tmp_path_factory):
    root = sample_data / "sent140"
    if not (root / "training_head_20k.csv").is_file():
        pytest.skip("sent140 sample CSV absent")
    return root


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def rows(sent140_root):
    with open(sent140_root / "training_head_20k.csv", encoding="latin-1", newline="") as handle:
        return list(csv.reader(handle))


def test_clients_are_twitter_users_with_all_their_tweets(sent140_root, rows):
    ds = make_dataset(
        name="sent140",
        num_clients=300,
        design_pool=30,
        test_fraction=0.2,
        seed=1,
        root=str(sent140_root),
        options={"min_samples": 2},
    )
    assert (ds.input_kind, ds.input_shape, ds.num_classes, ds.vocab_size) == ("long", (25,), 2, 10002)
    per_user = Counter(r[4] for r in rows)
    labels = {}
    for r in rows:
        labels.setdefault(r[4], []).append(1 if r[0] == "4" else 0)
    names = [ds.user_name(c) for c in range(330)]
    assert len(set(names)) == 330  # training users and the design pool are disjoint
    assert set(ds.design_pool_ids()) == set(range(300, 330))
    for cid in range(0, 330, 11):
        data = ds.client(cid)
        user = names[cid]
        assert per_user[user] >= 2
        assert data.num_train + data.num_test == per_user[user] == ds.num_train_samples(cid) + data.num_test
        assert data.num_test >= 1
        got = sorted(torch.cat([data.y_train, data.y_test]).tolist())
        assert got == sorted(labels[user])
        assert data.x_train.dtype == torch.int64 and data.x_train.shape[1:] == (25,)


def test_tokens_decode_to_the_users_words(sent140_root, rows):
    ds = Sent140Dataset(num_clients=50, design_pool_size=0, root=str(sent140_root), min_samples=3, seed=0)
    texts = {}
    for r in rows:
        texts.setdefault(r[4], set()).add(tuple(split_words(r[5])[:25]))
    vocab = ds.vocabulary
    assert vocab[PAD] == "<pad>" and vocab[UNK] == "<unk>" and len(vocab) == 10002
    for cid in range(50):
        data = ds.client(cid)
        for ids in torch.cat([data.x_train, data.x_test]).tolist():
            words = tuple(vocab[i] for i in ids if i != PAD)
            candidates = texts[ds.user_name(cid)]
            assert any(
                len(t) == len(words) and all(w == "<unk>" or w == v for w, v in zip(words, t)) for t in candidates
            )


def test_selection_is_seeded_and_too_many_users_is_a_one_line_error(sent140_root):
    a = Sent140Dataset(num_clients=20, design_pool_size=5, root=str(sent140_root), min_samples=2, seed=3)
    b = Sent140Dataset(num_clients=20, design_pool_size=5, root=str(sent140_root), min_samples=2, seed=3)
    c = Sent140Dataset(num_clients=20, design_pool_size=5, root=str(sent140_root), min_samples=2, seed=4)
    assert [a.user_name(i) for i in range(25)] == [b.user_name(i) for i in range(25)]
    assert [a.user_name(i) for i in range(25)] != [c.user_name(i) for i in range(25)]
    assert torch.equal(a.client(7).x_train, b.client(7).x_train)
    with pytest.raises(DataError) as err:
        Sent140Dataset(num_clients=1430, design_pool_size=10, root=str(sent140_root), min_samples=2)
    assert "1435 users with at least 2 samples" in str(err.value) and "\n" not in str(err.value)
    half = Sent140Dataset(num_clients=10, design_pool_size=0, root=str(sent140_root), min_samples=2, user_fraction=0.5)
    with pytest.raises(DataError, match="718 users"):
        Sent140Dataset(num_clients=718, design_pool_size=1, root=str(sent140_root), min_samples=2, user_fraction=0.5)
    assert half.num_clients == 10


def test_leaf_json_is_read_with_its_split(tmp_path):
    def doc(users, test):
        return {
            "users": users,
            "num_samples": [2] * len(users),
            "hierarchies": [],
            "user_data": {
                u: {
                    "x": [["1", "d", "NO_QUERY", u, f"{u} is {'happy' if test else 'sad'} today"]] * 2,
                    "y": [1 if test else 0] * 2,
                }
                for u in users
            },
        }

    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir(parents=True)
    (tmp_path / "data" / "train" / "all_data_0_keep_0_train_9.json").write_text(
        json.dumps(doc(["ann", "bob", "cat"], False))
    )
    (tmp_path / "data" / "test" / "all_data_0_keep_0_test_9.json").write_text(
        json.dumps(doc(["ann", "bob", "cat"], True))
    )
    ds = Sent140Dataset(num_clients=2, design_pool_size=1, root=str(tmp_path))
    for cid in range(3):
        data = ds.client(cid)
        assert (data.num_train, data.num_test, ds.num_train_samples(cid)) == (2, 2, 2)
        assert data.y_train.tolist() == [0, 0] and data.y_test.tolist() == [1, 1]
        words = [ds.vocabulary[i] for i in data.x_test[0].tolist() if i != PAD]
        assert words == [ds.user_name(cid), "is", "happy", "today"]


def test_missing_folder_and_file_are_one_line_errors(tmp_path):
    with pytest.raises(DataError) as err:
        Sent140Dataset(num_clients=1, design_pool_size=0, root=str(tmp_path / "nope"))
    assert "does not exist" in str(err.value) and "fedsim data prepare sent140" in str(err.value)
    with pytest.raises(DataError) as err:
        Sent140Dataset(num_clients=1, design_pool_size=0, root=str(tmp_path))
    assert "training.1600000.processed.noemoticon.csv not found in" in str(err.value)


def test_sent140_clients_train(sent140_root):
    from fedsim.clients.training import TrainSettings, evaluate_client, train_client
    from fedsim.data.base import ClientData
    from fedsim.models import build_model

    torch.manual_seed(0)  # dropout draws from the global generator
    ds = Sent140Dataset(num_clients=200, design_pool_size=0, root=str(sent140_root), min_samples=2, seed=0)
    parts = [ds.client(c) for c in range(200)]
    pooled = ClientData(
        *(torch.cat([getattr(p, k) for p in parts]) for k in ("x_train", "y_train", "x_test", "y_test"))
    )
    model = build_model(
        name="sent140_lstm",
        input_shape=ds.input_shape,
        num_classes=2,
        hidden=32,
        seed=0,
        vocab_size=ds.vocab_size,
        embed_dim=32,
    )
    before = evaluate_client(
        model=model, data=ClientData(pooled.x_train, pooled.y_train, pooled.x_train, pooled.y_train)
    )
    settings = TrainSettings(epochs=6, batch_size=32, optimizer="adam", lr=0.01)
    train_client(model=model, data=pooled, settings=settings, seed=0)
    after = evaluate_client(
        model=model, data=ClientData(pooled.x_train, pooled.y_train, pooled.x_train, pooled.y_train)
    )
    assert after[0] < 0.85 * before[0]  # training loss on the users' tweets fell
    majority = max(float(pooled.y_train.float().mean()), 1 - float(pooled.y_train.float().mean()))
    assert after[1] / after[2] > majority + 0.1  # better than always guessing the larger class
    assert np.isfinite(after[0])
