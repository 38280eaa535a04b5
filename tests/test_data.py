"""The data layer: locating, downloading, verifying and reading MNIST, with clear errors that write nothing."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from hpstudy import cli
from hpstudy import data as hdata
from hpstudy.errors import DataError


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $HPSTUDY_DATA_DIR and an empty user cache under tmp_path."""
    monkeypatch.delenv(hdata.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def serve(tmp_path):
    """Serve a folder over HTTP on loopback; yields a function folder -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()


def _mirror(monkeypatch, url: str) -> None:
    """Download MNIST from `url` in this test."""
    monkeypatch.setitem(hdata.IDX_DATASETS, "mnist", dataclasses.replace(hdata.IDX_DATASETS["mnist"], mirror=url))


def test_missing_offline_names_file_dirs_and_fixes(isolated):
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        hdata.load_mnist(empty, download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(empty) in msg and str(hdata.default_cache_dir()) in msg
    assert "--data-dir" in msg and hdata.ENV_DATA_DIR in msg


def test_failed_download_reports_and_leaves_nothing(isolated, monkeypatch):
    _mirror(monkeypatch, "http://127.0.0.1:9/")  # nothing listens on port 9
    with pytest.raises(DataError, match="download from http://127.0.0.1:9/ failed"):
        hdata.load_mnist(None)  # no local copy: only the (empty) cache, then the mirror
    cache = hdata.default_cache_dir()
    assert not cache.exists() or not any(cache.iterdir())


def test_download_with_wrong_checksum_is_rejected_before_rename(isolated, monkeypatch, serve):
    mirror = isolated / "mirror"
    mirror.mkdir()
    for name in hdata.MNIST_FILES:
        (mirror / name).write_bytes(b"not mnist")
    _mirror(monkeypatch, serve(mirror))
    with pytest.raises(DataError, match="checksum mismatch"):
        hdata.load_mnist(None)  # no local copy: only the (empty) cache, then the mirror
    assert not any(hdata.default_cache_dir().iterdir())  # neither the file nor a partial download


def test_download_from_mirror_into_cache(isolated, monkeypatch, serve, mnist_dir):
    _mirror(monkeypatch, serve(mnist_dir))
    dataset = hdata.load_mnist(None)  # no local copy: only the (empty) cache, then the mirror
    assert sorted(p.name for p in hdata.default_cache_dir().iterdir()) == sorted(hdata.MNIST_FILES)
    assert len(dataset.train) == 60000 and len(dataset.test) == 10000


def test_checksum_mismatch_names_file_expected_and_actual(isolated, mnist_dir):
    folder = isolated / "bad"
    shutil.copytree(mnist_dir, folder)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    target.chmod(0o644)
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DataError) as err:
        hdata.load_mnist(folder, download=False)
    msg = str(err.value)
    assert str(target) in msg and hdata.MNIST_FILES[target.name] in msg and hdata.sha256_file(target) in msg


def test_truncated_gzip_and_wrong_magic(tmp_path):
    good = gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    (tmp_path / "trunc.gz").write_bytes(good[:-6])
    with pytest.raises(DataError, match="truncated or corrupt"):
        hdata.read_idx(tmp_path / "trunc.gz", (3,))
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + bytes(3)))
    with pytest.raises(DataError, match="wrong IDX magic"):
        hdata.read_idx(tmp_path / "magic.gz", (3,))
    (tmp_path / "shape.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + bytes(4)))
    with pytest.raises(DataError, match="expected shape"):
        hdata.read_idx(tmp_path / "shape.gz", (3,))
    (tmp_path / "ok.gz").write_bytes(good)
    assert hdata.read_idx(tmp_path / "ok.gz", (3,)).tolist() == [1, 2, 3]


def test_cli_missing_data_exits_nonzero_and_writes_nothing(isolated, capsys):
    empty = isolated / "empty"
    empty.mkdir()
    results = isolated / "results"
    code = cli.main(
        [
            "run",
            "studies/naragundkar2024_grid.toml",
            "--seeds",
            "1",
            "--max-epochs",
            "1",
            "--data-dir",
            str(empty),
            "--no-download",
            "--results",
            str(results),
        ]
    )
    assert code == DataError.exit_code != 0
    assert "not found" in capsys.readouterr().err
    assert not results.exists()


def test_real_mnist_splits(mnist_dir):
    test_scheme = hdata.load_mnist(mnist_dir, "test", download=False)
    assert test_scheme.train.images.dtype == np.uint8 and test_scheme.train.images.shape == (60000, 784)
    assert test_scheme.validation is test_scheme.test
    holdout = hdata.load_mnist(mnist_dir, "holdout:10000", download=False)
    assert len(holdout.train) == 50000 and len(holdout.validation) == 10000
    assert np.array_equal(holdout.validation.images, test_scheme.train.images[50000:])
    assert hdata.load_mnist(mnist_dir, "none", download=False).validation is None
    assert test_scheme.fingerprint == holdout.fingerprint


def test_bad_validation_scheme():
    with pytest.raises(ValueError, match="holdout:N"):
        hdata.parse_validation("holdout:zero")
