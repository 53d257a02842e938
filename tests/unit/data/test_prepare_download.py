"""`fedsim data prepare`: download from a local HTTP server, sha256 checks, one-line errors."""

import hashlib
import http.server
import threading
import zipfile
from functools import partial

import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.data import Sent140Dataset
from fedsim.data import cifar10 as cifar_mod
from tests.fixtures.fake_datasets import write_fake_cifar10


@pytest.fixture()
def served(tmp_path):
    """A folder served on 127.0.0.1 (an ephemeral port) for the duration of a test."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args, **kwargs):
            pass

    handler = partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture()
def sample_zip(sample_data, served):
    """The sample CSV packed like the official zip, under the official member name."""
    csv = sample_data / "sent140" / "training_head_20k.csv"
    if not csv.is_file():
        pytest.skip("sent140 sample CSV absent")
    folder, base = served
    with zipfile.ZipFile(folder / "trainingandtestdata.zip", "w") as archive:
        archive.write(csv, "training.1600000.processed.noemoticon.csv")
    digest = hashlib.sha256((folder / "trainingandtestdata.zip").read_bytes()).hexdigest()
    return f"{base}/trainingandtestdata.zip", digest


def _one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("fedsim: error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_prepare_fetches_verifies_and_converts(tmp_path, sample_zip):
    url, digest = sample_zip
    root = tmp_path / "sent140"
    result = CliRunner().invoke(
        app, ["data", "prepare", "sent140", "--root", str(root), "--url", url, "--sha256", digest]
    )
    assert result.exit_code == 0, result.output
    assert f"sha256 {digest}" in result.output and "18105 users" in result.output
    assert hashlib.sha256((root / "trainingandtestdata.zip").read_bytes()).hexdigest() == digest
    ds = Sent140Dataset(num_clients=100, design_pool_size=10, root=str(root), min_samples=2)
    assert ds.client(0).num_train >= 1
    # an existing, verified file is not fetched again
    again = CliRunner().invoke(
        app, ["data", "prepare", "sent140", "--root", str(root), "--url", url + ".gone", "--sha256", digest]
    )
    assert again.exit_code == 0 and "downloaded" not in again.output


def test_wrong_checksum_is_refused_and_not_kept(tmp_path, sample_zip, monkeypatch):
    url, digest = sample_zip
    root = tmp_path / "sent140"
    monkeypatch.setenv("FEDSIM_SENT140_URL", url)  # the address from the environment; pinned official sha256
    line = _one_line_error(CliRunner().invoke(app, ["data", "prepare", "sent140", "--root", str(root)]))
    assert f"has sha256 {digest}, expected 004a3772" in line and "not kept" in line
    assert not (root / "trainingandtestdata.zip").exists()
    assert not list(root.glob("*.part")) and not (root / "prepared").exists()


def test_cifar10_tarball_from_local_server(tmp_path, served):
    folder, base = served
    digest = write_fake_cifar10(folder, images_per_batch=10, tarball=True)[cifar_mod.TARBALL]
    root = tmp_path / "cifar"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "prepare",
            "cifar10",
            "--root",
            str(root),
            "--url",
            f"{base}/{cifar_mod.TARBALL}",
            "--sha256",
            digest,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert '"rows": 50' in result.output and '"downloaded": true' in result.output


def test_unreachable_source_and_celeba_say_which_file_goes_where(tmp_path, served):
    _, base = served
    root = tmp_path / "s"
    line = _one_line_error(
        CliRunner().invoke(app, ["data", "prepare", "sent140", "--root", str(root), "--url", f"{base}/missing.zip"])
    )
    assert "trainingandtestdata.zip" in line and str(root) in line and "fedsim data prepare sent140" in line
    line = _one_line_error(CliRunner().invoke(app, ["data", "prepare", "celeba", "--root", str(root)]))
    assert "img_align_celeba" in line and "identity_CelebA.txt" in line and "list_attr_celeba.txt" in line


def test_run_with_a_missing_data_folder_is_one_line(tmp_path, project_root):
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(project_root / "scenarios" / "sent140.yaml"),
            "--set",
            f"data.root={tmp_path / 'nowhere'}",
            "--engine",
            "inprocess",
            "--out",
            str(tmp_path / "runs"),
        ],
    )
    line = _one_line_error(result)
    assert "does not exist" in line and "fedsim data prepare sent140" in line
