"""Shakespeare on the real samples: tinyshakespeare speeches, LEAF JSON, a Gutenberg-format text."""

import json

import pytest
import torch

from fedsim.data import ShakespeareDataset
from fedsim.data.shakespeare import parse_gutenberg, parse_speeches
from fedsim.data.text import CHAR_UNK, NUM_CHARS, SEQ_LEN, decode_chars, encode_chars
from fedsim.errors import DataError
from fedsim.store import RunStore


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def shk_root(sample_data):
    root = sample_data / "shakespeare"
    if not (root / "tinyshakespeare.txt").is_file():
        pytest.skip("shakespeare sample absent")
    return root


def test_alphabet_is_leafs_80_characters_plus_unknown():
    assert NUM_CHARS == 81
    ids = encode_chars("To be, or not}\u00e9")
    assert decode_chars(ids[:-1]) == "To be, or not}" and ids[-1] == CHAR_UNK


def test_speeches_become_roles_whose_samples_are_80_char_windows(shk_root):
    raw = (shk_root / "tinyshakespeare.txt").read_text()
    roles = parse_speeches(raw)
    # 309 role lines; 10 ghosts only ever "speak" in a list of names with an empty speech
    assert len(roles) == 299 and "GLOUCESTER" in roles
    ds = ShakespeareDataset(
        num_clients=40,
        design_pool_size=5,
        root=str(shk_root),
        source="speeches",
        min_samples=400,
        max_samples=300,
        seed=0,
    )
    assert (ds.input_kind, ds.input_shape, ds.num_classes) == ("long", (80,), 81)
    assert len({ds.user_name(c) for c in range(45)}) == 45
    for cid in (0, 17, 44):
        data = ds.client(cid)
        text = roles[ds.user_name(cid)]
        assert data.x_train.shape == (data.num_train, SEQ_LEN) and data.x_train.dtype == torch.int64
        assert data.num_train == ds.num_train_samples(cid) == 240 and data.num_test == 60
        x, y = data.x_train, data.y_train
        assert torch.equal(x[1:, :-1], x[:-1, 1:])  # consecutive windows slide by one character
        assert torch.equal(y[:-1], x[1:, -1])  # the label is the next character
        window = decode_chars(x[5].tolist()) + decode_chars([int(y[5])])
        assert window in text  # a real stretch of that role's lines
        train_text = decode_chars(x[0].tolist()) + decode_chars(y.tolist())
        test_text = decode_chars(data.x_test[0].tolist()) + decode_chars(data.y_test.tolist())
        start = text.index(train_text)
        assert text.index(test_text, start) >= start + len(train_text)  # no shared characters


def test_real_leaf_json_keeps_users_and_split(shk_root):
    leaf = shk_root / "leaf"
    train = json.loads((leaf / "all_data_niid_023_keep_64_train_9.json").read_text())
    test = json.loads((leaf / "all_data_niid_023_keep_64_test_9.json").read_text())
    ds = ShakespeareDataset(num_clients=8, design_pool_size=2, root=str(shk_root), seed=0)
    assert ds.layout == "windows"
    assert {ds.user_name(c) for c in range(10)} == set(train["users"])
    for cid in range(10):
        user = ds.user_name(cid)
        data = ds.client(cid)
        assert data.num_train == len(train["user_data"][user]["y"]) == ds.num_train_samples(cid)
        assert data.num_test == len(test["user_data"][user]["y"])
        assert decode_chars(data.x_train[3].tolist()) == train["user_data"][user]["x"][3]
        assert decode_chars([int(data.y_test[-1])]) == test["user_data"][user]["y"][-1]
    with pytest.raises(DataError, match="10 users"):
        ShakespeareDataset(num_clients=10, design_pool_size=1, root=str(shk_root))


def test_gutenberg_layout_is_split_by_play_and_role(tmp_path):
    text = """The Project Gutenberg eBook of The Complete Works of William Shakespeare
*** START OF THE PROJECT GUTENBERG EBOOK THE COMPLETE WORKS OF WILLIAM SHAKESPEARE ***
The Complete Works of William Shakespeare

                    Contents

    THE SONNETS
    THE TRAGEDY OF HAMLET, PRINCE OF DENMARK
    THE TEMPEST



THE SONNETS

                    1

From fairest creatures we desire increase,

THE TRAGEDY OF HAMLET, PRINCE OF DENMARK

ACT I

SCENE I. Elsinore. A platform before the Castle.

 Enter Francisco and Barnardo, two sentinels.

BARNARDO.
Who’s there?

FRANCISCO.
Nay, answer me. Stand and unfold yourself. [_Aside._]

BARNARDO.
Long live the King!

THE TEMPEST

ACT I

FRANCISCO.
I am a different Francisco,
on a ship.
"""
    users = parse_gutenberg(text)
    assert users == {
        "THE_TRAGEDY_OF_HAMLET_PRINCE_OF_DENMARK_BARNARDO": "Who’s there? Long live the King!",
        "THE_TRAGEDY_OF_HAMLET_PRINCE_OF_DENMARK_FRANCISCO": "Nay, answer me. Stand and unfold yourself.",
        "THE_TEMPEST_FRANCISCO": "I am a different Francisco, on a ship.",
    }
    (tmp_path / "pg100.txt").write_text(text.replace("Long live the King!", "Long live the King! " * 10))
    ds = ShakespeareDataset(num_clients=1, design_pool_size=0, root=str(tmp_path), test_fraction=0.0, seed=0)
    assert ds.layout == "stream" and ds.user_name(0) == "THE_TRAGEDY_OF_HAMLET_PRINCE_OF_DENMARK_BARNARDO"
    assert ds.client(0).num_train == len("Who’s there? " + "Long live the King! " * 10) - 1 - SEQ_LEN
    with pytest.raises(DataError, match="pg100.txt not found"):
        (tmp_path / "empty").mkdir()
        ShakespeareDataset(num_clients=1, design_pool_size=0, root=str(tmp_path / "empty"))


def test_shakespeare_scenario_runs_in_process(shk_root, project_root, tmp_path):

    from typer.testing import CliRunner

    from fedsim.cli import app

    result = CliRunner().invoke(
        app,
        [
            "run",
            str(project_root / "scenarios" / "shakespeare.yaml"),
            "--engine",
            "inprocess",
            "--out",
            str(tmp_path),
            "--set",
            f"data.root={shk_root}",
            "--set",
            "data.options.source=speeches",
            "--set",
            "rounds=2",
            "--set",
            "model.hidden=16",
            "--set",
            "data.options.max_samples=30",
            "--set",
            "clients_per_round=3",
            "--set",
            "evaluation.clients=3",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = RunStore.open(next(tmp_path.glob("*/rounds.csv")).parent).rounds()
    assert len(rows) == 2 and 0 <= float(rows[-1].eval_accuracy) <= 1 and float(rows[-1].eval_loss) > 0
