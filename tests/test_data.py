"""Tests of npvae.data: the IDX reader, data set lookup, batches, real data.

Every file is made by the test itself in ``tmp_path``; nothing needs the
network. ``test_real_data`` runs only when ``NPVAE_TEST_DATA`` points at a
folder holding ``mnist/`` and ``fashion-mnist/`` (e.g. /work/shared/data).
"""
import errno
import gzip
import hashlib
import inspect
import os
import shutil
import struct
import tempfile
import threading
import time
import tracemalloc
import warnings

import numpy as np
import pytest

import npvae
from npvae import cli
from npvae.data import (SYSTEM_DIRS, Dataset, binarize, cache_dir, canonical_name, iterate_indices,
                        iterate_minibatches, load_dataset, load_idx_folder, load_idx_split, load_split, locate,
                        read_idx, read_idx_header, read_images, read_labels, search_path, split, to_float)
from npvae.errors import DataFileError, DatasetNotFoundError, InputError, InputTypeError

SAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist-sample")
CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
         np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr, code=None, dims=None):
    """The IDX encoding of ``arr``; ``code``/``dims`` override the header to make bad files."""
    arr = np.asarray(arr)
    big = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    code = CODES[big.dtype] if code is None else code
    dims = arr.shape if dims is None else dims
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + big.tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def make_split(folder, n, split="train", gz=True, rows=4, cols=3, seed=0):
    """Write a tiny image/label pair; pixel 0 of image 0 holds ``n`` as a marker."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, rows, cols), dtype=np.uint8)
    images[0, 0, 0] = n
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    prefix = "train" if split == "train" else "t10k"
    write(folder / f"{prefix}-images-idx3-ubyte{suffix}", idx_bytes(images), gz)
    write(folder / f"{prefix}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz)
    return images.reshape(n, -1), labels


def make_dataset(folder, n_train, n_test=2, gz=True):
    """A tiny data set that loads by name: 28x28 images, as MNIST's."""
    make_split(folder, n_train, "train", gz, rows=28, cols=28)
    make_split(folder, n_test, "t10k", gz, rows=28, cols=28, seed=1)
    return folder


# ----------------------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    arr = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = write(tmp_path / "a.idx", idx_bytes(arr), gz)
    got = read_idx(path)
    assert got.shape == (2, 3, 4)
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    assert got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4), (1, 2, 3, 2), (0, 28, 28)])
def test_read_idx_shapes(tmp_path, shape):
    arr = np.ones(shape, np.uint8)
    assert read_idx(write(tmp_path / "a", idx_bytes(arr))).shape == shape


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc/self/mem")
@pytest.mark.parametrize("read", [read_idx, read_idx_header])
def test_a_file_that_cannot_be_read_raises_an_oserror_naming_it(tmp_path, read):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.symlink_to("/proc/self/mem")      # opens, but reading it fails (an I/O error), even for root
    with pytest.raises(OSError, match="Input/output error") as caught:
        read(path)
    assert caught.value.filename == str(path) and not isinstance(caught.value, DataFileError)


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    gz_named_raw = write(tmp_path / "x-idx1-ubyte", idx_bytes(arr), gz=True)
    raw_named_gz = write(tmp_path / "y-idx1-ubyte.gz", idx_bytes(arr), gz=False)
    np.testing.assert_array_equal(read_idx(gz_named_raw), arr)
    np.testing.assert_array_equal(read_idx(raw_named_gz), arr)


def test_read_images_and_labels(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.int64).astype(np.uint8).reshape(3, 28, 28)
    got = read_images(write(tmp_path / "i.gz", idx_bytes(images), gz=True))
    assert got.shape == (3, 784) and got.dtype == np.uint8
    np.testing.assert_array_equal(got[1], images[1].ravel())
    labels = np.array([3, 1, 4], np.uint8)
    got = read_labels(write(tmp_path / "l", idx_bytes(labels)))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, labels)
    with pytest.raises(DataFileError, match="image file"):
        read_images(tmp_path / "l")
    with pytest.raises(DataFileError, match="label file"):
        read_labels(tmp_path / "i.gz")
    with pytest.raises(DataFileError, match="uint8"):
        read_labels(write(tmp_path / "f", idx_bytes(np.zeros(3, ">f4"))))


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def test_a_path_with_a_nul_is_refused_as_input():
    with pytest.raises(InputError, match="NUL"):
        read_idx("a\0b")


def _unblock_after(fifo, seconds):
    """A thread that, if someone is still waiting to read ``fifo`` after ``seconds``, opens and
    closes its writing end: a regression then fails the test instead of hanging the suite."""
    def unblock():
        deadline = time.monotonic() + seconds + 5
        time.sleep(seconds)
        while time.monotonic() < deadline:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:          # no reader (the test is done): nothing to unblock
                time.sleep(0.1)
    threading.Thread(target=unblock, daemon=True).start()


@pytest.mark.parametrize("read", [read_idx, read_idx_header])
def test_a_pipe_is_refused_not_waited_on(tmp_path, read):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _unblock_after(fifo, 5)
    with pytest.raises(DataFileError, match="not a regular file"):
        read(fifo)           # (opening a pipe nobody writes to would wait forever)


GOOD = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)

MALFORMED = {
    "empty file": (b"", "empty"),
    "short header": (b"\x00\x00\x08", "truncated IDX header"),
    "bad magic": (b"\x01\x00" + idx_bytes(GOOD)[2:], "two zero bytes"),
    "bad magic, second byte": (b"\x00\x01" + idx_bytes(GOOD)[2:], "two zero bytes"),
    "bad dtype code": (idx_bytes(GOOD, code=0x0A), "type code 0x0A"),
    "ndim 0": (bytes([0, 0, 8, 0]), "0 dimensions"),
    "ndim 5": (bytes([0, 0, 8, 5]) + struct.pack(">5I", 1, 1, 1, 1, 1) + b"\x00", "5 dimensions"),
    "dims cut short": (bytes([0, 0, 8, 3]) + struct.pack(">2I", 2, 4), "truncated IDX header"),
    "fewer data bytes": (idx_bytes(GOOD)[:-1], "truncated"),
    "more dims than data": (idx_bytes(GOOD, dims=(3, 4, 3)), "36 data bytes"),
    "trailing bytes": (idx_bytes(GOOD) + b"\x00", "trailing"),
    "a 0 beside huge dims": (bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 2 ** 32 - 1, 2 ** 32 - 1),
                             "no array can have"),
    # files that are something else, said as such (Kaggle's zip, a file gzipped twice, a web page)
    "a zip archive": (b"PK\x03\x04" + bytes(30), "got 50 4b 03 04, a zip archive: unzip it"),
    "gzip inside gzip": (gzip.compress(gzip.compress(idx_bytes(GOOD))), "gzip data inside gzip \\(compressed twice\\?\\)"),
    "bzip2": (b"BZh91AY&SY" + bytes(20), "bzip2 data: decompress it with bunzip2"),
    "xz": (b"\xfd7zXZ\x00" + bytes(20), "xz data: decompress it with unxz"),
    "a web page": (b"<!DOCTYPE html><html>Moved</html>", "a web page saved in place of the file"),
}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_raise_data_file_error(tmp_path, case, gz):
    data, message = MALFORMED[case]
    path = write(tmp_path / "bad-idx3-ubyte", data, gz)
    with pytest.raises(DataFileError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def _rejection_cost(path, match):
    """(seconds, peak traced bytes) of read_idx refusing ``path`` with a DataFileError."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DataFileError, match=match):
            read_idx(path)
        return time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("n", [2 ** 31, 20000])     # 20,000 images: 16 MB, more than ~50 gzip bytes can hold
@pytest.mark.parametrize("gz", [False, True])
def test_a_header_claiming_more_images_than_the_file_holds_fails_fast_without_allocating(tmp_path, gz, n):
    data = idx_bytes(GOOD, dims=(n, 28, 28))
    path = write(tmp_path / "huge", data, gz)
    elapsed, peak = _rejection_cost(path, str(n * 784))
    assert elapsed < 1.0
    assert peak < 10 * 2 ** 20  # numpy reports its allocations to tracemalloc


def test_gzip_bomb_is_not_decompressed_past_the_header(tmp_path):
    # The header promises 1000 images (784,000 bytes); the stream holds 64 MB.
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1000, 28, 28)
    path = write(tmp_path / "bomb.gz", header + bytes(64 * 2 ** 20), gz=True)
    elapsed, peak = _rejection_cost(path, "trailing bytes")
    assert elapsed < 1.0
    assert peak < 8 * 2 ** 20


def test_truncated_gzip(tmp_path):
    data = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8)))
    for cut in (len(data) - 4, len(data) - 9, len(data) // 2, 12, 3, 2):
        path = tmp_path / f"cut{cut}.gz"
        path.write_bytes(data[:cut])
        with pytest.raises(DataFileError) as info:
            read_idx(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("read", [read_idx, read_idx_header])
@pytest.mark.parametrize("data, message", [
    (gzip.compress(idx_bytes(np.arange(300, dtype=np.uint8)), mtime=0)[:12], r"gzip stream ends early \(file truncated\?\)"),
    (b"\x1f\x8b" + bytes(30), "corrupt gzip data: Unknown compression method"),
])
def test_a_cut_or_garbled_gzip_file_is_said_as_such_by_either_reader(tmp_path, read, data, message):
    path = write(tmp_path / "bad.gz", data)
    with pytest.raises(DataFileError, match=f"^{path}: {message}"):
        read(path)


def test_corrupted_gzip(tmp_path):
    good = bytearray(gzip.compress(idx_bytes(GOOD)))
    bad_crc = bytearray(good)
    bad_crc[-8] ^= 0xFF  # first byte of the CRC32 trailer
    with pytest.raises(DataFileError, match="CRC"):
        read_idx(write(tmp_path / "crc.gz", bytes(bad_crc)))
    garbage = bytes(good[:10]) + bytes(range(200))  # valid gzip header, nonsense stream
    with pytest.raises(DataFileError, match="gzip"):
        read_idx(write(tmp_path / "garbage.gz", garbage))
    with pytest.raises(DataFileError):
        read_idx(write(tmp_path / "magic-only.gz", b"\x1f\x8b"))
    # Junk after a complete gzip member is trailing data too.
    with pytest.raises(DataFileError):
        read_idx(write(tmp_path / "junk.gz", bytes(good) + b"junk"))


def test_a_flipped_bit_in_a_gzip_file_is_called_corrupt_not_trailing_bytes(tmp_path):
    """A flip in the deflate stream can make it decompress longer than the header says: the
    message must be the CRC's (corrupt), not 'trailing bytes' (the file is not too long)."""
    good = gzip.compress(idx_bytes(np.random.default_rng(0).integers(0, 10, 300).astype(np.uint8)), mtime=0)
    said = set()
    for byte in range(10, len(good) - 8):          # the deflate stream: between the header and the trailer
        for bit in (0, 5):
            bad = bytearray(good)
            bad[byte] ^= 1 << bit
            try:
                read_idx(write(tmp_path / "flip.gz", bytes(bad)))
            except DataFileError as e:
                said.add("trailing" if "trailing bytes" in str(e) else "other")
    assert said == {"other"}


def _corrupt(data, rng):
    """One random byte-level corruption of ``data``."""
    data = bytearray(data)
    op = rng.integers(4) if data else 2
    if op == 0:  # flip 1..4 bytes
        for _ in range(rng.integers(1, 5)):
            data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
    elif op == 1:  # truncate
        del data[rng.integers(len(data)):]
    elif op == 2:  # insert 1..8 random bytes
        at = int(rng.integers(len(data) + 1))
        data[at:at] = rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes()
    else:  # delete a short range
        at = int(rng.integers(len(data)))
        del data[at:at + int(rng.integers(1, 9))]
    return bytes(data)


def test_fuzz_corruptions_load_or_raise_data_file_error(tmp_path):
    rng = np.random.default_rng(1234)
    images = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    floats = rng.standard_normal((3, 7)).astype(">f4")
    raws = [idx_bytes(images), idx_bytes(floats)]
    bases = raws + [gzip.compress(r, mtime=0) for r in raws]
    outcomes = {"loaded": 0, "DataFileError": 0}
    t0 = time.perf_counter()
    for i in range(300):
        data = _corrupt(bases[i % len(bases)], rng)
        path = tmp_path / f"fuzz{i}"
        path.write_bytes(data)
        try:
            arr = read_idx(path)
        except DataFileError as e:
            assert str(path) in str(e)
            outcomes["DataFileError"] += 1
        else:
            assert isinstance(arr, np.ndarray)
            outcomes["loaded"] += 1
    assert outcomes["DataFileError"] > 100  # most corruptions must be caught...
    assert outcomes["loaded"] > 0           # ...while a flipped pixel still loads
    assert time.perf_counter() - t0 < 20


# ----------------------------------------------------------------------------- folders

def test_load_idx_folder_gz_and_raw(tmp_path, monkeypatch):
    imgs, labs = make_split(tmp_path / "d", 5, "train", gz=True)
    timgs, tlabs = make_split(tmp_path / "d", 3, "t10k", gz=False, seed=2)
    ds = load_idx_folder(tmp_path / "d")
    assert isinstance(ds, Dataset)
    assert ds.name == "d" and ds.source == str(tmp_path / "d")
    np.testing.assert_array_equal(ds.train_images, imgs)
    np.testing.assert_array_equal(ds.train_labels, labs)
    np.testing.assert_array_equal(ds.test_images, timgs)
    np.testing.assert_array_equal(ds.test_labels, tlabs)
    assert ds.train_images.dtype == np.uint8 and ds.train_images.shape == (5, 12)
    assert "train=(5, 12)" in repr(ds)
    monkeypatch.chdir(tmp_path)
    assert load_idx_folder("d").source == str(tmp_path / "d")       # absolute, as documented


def test_load_idx_folder_missing_file(tmp_path):
    make_split(tmp_path, 5, "train")
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte"):
        load_idx_folder(tmp_path)


def test_image_label_count_mismatch_names_both_files(tmp_path):
    make_dataset(tmp_path, 5)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(4, np.uint8)), gz=True)
    with pytest.raises(DataFileError) as info:
        load_idx_folder(tmp_path)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "train-labels-idx1-ubyte.gz" in msg
    assert "5 images" in msg and "4 labels" in msg


def test_the_gz_file_wins_over_the_uncompressed_one(tmp_path):
    imgs, labs = make_split(tmp_path, 3, "t10k", gz=True)
    make_split(tmp_path, 5, "t10k", gz=False, seed=1)
    x, y = load_idx_split(tmp_path, "t10k")
    np.testing.assert_array_equal(x, imgs)
    np.testing.assert_array_equal(y, labs)


def test_load_idx_split(tmp_path):
    imgs, labs = make_split(tmp_path, 7, "t10k")
    for name in ("t10k", "test"):
        x, y = load_idx_split(tmp_path, name)
        np.testing.assert_array_equal(x, imgs)
        np.testing.assert_array_equal(y, labs)
    with pytest.raises(InputError, match="split"):
        load_idx_split(tmp_path, "valid")
    with pytest.raises(DatasetNotFoundError, match="train-images"):
        load_idx_split(tmp_path, "train")


# ----------------------------------------------------------------------------- lookup

@pytest.fixture
def places(tmp_path, monkeypatch):
    """Four candidate places, each holding the data set with a different train size."""
    p = {"data_dir": tmp_path / "explicit", "env": tmp_path / "env", "xdg": tmp_path / "xdg",
         "system": tmp_path / "system" / "fashion-mnist"}
    monkeypatch.setenv("NPVAE_DATA_DIR", str(p["env"]))
    monkeypatch.setenv("XDG_CACHE_HOME", str(p["xdg"]))
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (str(p["system"]),))
    monkeypatch.setitem(SYSTEM_DIRS, "mnist", ())
    make_dataset(p["data_dir"] / "fashion-mnist", 3)
    make_dataset(p["env"] / "fashion-mnist", 4)
    make_dataset(p["xdg"] / "npvae" / "fashion-mnist", 5)
    make_dataset(p["system"], 6)
    return p


def _n_train(**kw):
    return len(load_dataset("fashion-mnist", download=False, **kw).train_images)


def test_lookup_order(places, monkeypatch):
    assert _n_train(data_dir=places["data_dir"]) == 3
    assert _n_train() == 4                      # NPVAE_DATA_DIR beats the cache
    shutil.rmtree(places["env"] / "fashion-mnist")
    assert _n_train() == 5                      # then the XDG cache
    monkeypatch.delenv("NPVAE_DATA_DIR")
    shutil.rmtree(places["xdg"])
    assert _n_train() == 6                      # then the system folder
    ds = load_dataset("fmnist", download=False)
    assert ds.name == "fashion-mnist" and ds.source == str(places["system"])


def test_an_environment_variable_naming_no_folder_is_said_when_the_data_come_from_elsewhere(places, monkeypatch):
    """A typo in $NPVAE_DATA_DIR would otherwise pass unseen: the cache (or a download) takes over."""
    monkeypatch.setenv("NPVAE_DATA_DIR", str(places["env"]) + "-typo")
    with pytest.warns(UserWarning, match=r"\$NPVAE_DATA_DIR=.*env-typo: folder does not exist; using "
                                         r"fashion-mnist from .*xdg.* instead") as record:
        assert _n_train() == 5
    assert record[0].filename == __file__       # it points at the user's call, not at npvae's insides


def test_the_environment_variable_warning_points_at_the_users_line_from_every_entry(places, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(places["env"]) + "-typo")
    with pytest.warns(UserWarning, match=r"NPVAE_DATA_DIR") as record:
        line = inspect.currentframe().f_lineno + 1
        locate("fashion-mnist", download=False)
    assert (record[0].filename, record[0].lineno) == (__file__, line)
    with pytest.warns(UserWarning, match=r"NPVAE_DATA_DIR") as record:
        line = inspect.currentframe().f_lineno + 1
        load_split("fashion-mnist", "train", download=False)
    assert (record[0].filename, record[0].lineno) == (__file__, line)


def test_an_explicit_data_dir_is_not_warned_about_the_environment_variable(places, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(places["env"]) + "-typo")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _n_train(data_dir=places["data_dir"]) == 3


def test_an_environment_variable_naming_a_folder_without_this_data_set_is_passed_over_quietly(places, monkeypatch):
    """One folder of data sets may hold some of them: the others come from the cache without a word."""
    shutil.rmtree(places["env"] / "fashion-mnist")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _n_train() == 5


def test_folder_needs_all_four_files(places):
    os.remove(places["env"] / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz")
    assert _n_train() == 5


def test_files_directly_in_data_dir_and_env(tmp_path, places, monkeypatch):
    make_dataset(tmp_path / "flat", 8, gz=False)
    assert _n_train(data_dir=tmp_path / "flat") == 8
    monkeypatch.setenv("NPVAE_DATA_DIR", str(tmp_path / "flat"))
    assert _n_train() == 8
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NPVAE_DATA_DIR", "flat")       # relative: the source is still a full path
    assert load_dataset("fashion-mnist", download=False).source == str(tmp_path / "flat")


def test_explicit_data_dir_without_files_is_an_error(tmp_path, places):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=empty)  # even with download=True
    msg = str(info.value)
    assert str(empty) in msg and "data_dir was given" in msg
    assert str(places["xdg"]) not in msg


def test_files_under_another_spelling_or_one_folder_down_are_pointed_at(tmp_path):
    """Kaggle's MNIST names (a dot for a dash), upper case, .GZ, and torchvision's MNIST/raw:
    not found (the names are the contract), but the error says where they are."""
    kaggle = make_dataset(tmp_path / "kaggle", 2, gz=False)
    os.rename(kaggle / "t10k-images-idx3-ubyte", kaggle / "t10k-images.idx3-ubyte")
    os.rename(kaggle / "t10k-labels-idx1-ubyte", kaggle / "T10K-LABELS-IDX1-UBYTE.GZ")
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist", "t10k", data_dir=kaggle)
    assert ("missing t10k-images-idx3-ubyte[.gz] (t10k-images.idx3-ubyte is there: rename it "
            "t10k-images-idx3-ubyte), t10k-labels-idx1-ubyte[.gz] (T10K-LABELS-IDX1-UBYTE.GZ is there: "
            "rename it t10k-labels-idx1-ubyte.gz)") in str(info.value)
    torchvision = tmp_path / "tv"                      # FashionMNIST/ sorts first: not the one to point at
    make_dataset(torchvision / "FashionMNIST" / "raw", 2, gz=False)
    make_dataset(torchvision / "MNIST" / "raw", 2, gz=False)
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=torchvision)
    assert f"; they are in {torchvision / 'MNIST' / 'raw'}: point there" in str(info.value)
    with pytest.raises(DatasetNotFoundError) as info:   # the layout the docs advise, holding only MNIST
        load_dataset("fashion-mnist", data_dir=make_dataset(tmp_path / "shared" / "mnist", 2).parent)
    assert "point there" not in str(info.value)


def test_a_data_dir_that_is_a_file_is_told_to_be_the_folder(tmp_path, places):
    """Not "put the files in README.md/mnist": the advice fits what was given."""
    readme = tmp_path / "README.md"
    readme.write_text("notes")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=readme)
    last = str(info.value).splitlines()[-1]
    assert last.startswith(f"To fix: give data_dir as the folder that holds the files (gzip-compressed or not), "
                           f"not {readme}, or leave out data_dir"), last


def test_home_cache_when_xdg_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir("fmnist") == str(tmp_path / ".cache" / "npvae" / "fashion-mnist")
    assert (str(tmp_path / ".cache" / "npvae" / "mnist"), "user cache") in search_path("mnist")   # nothing ignored
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as the XDG spec says
    assert cache_dir("mnist") == str(tmp_path / ".cache" / "npvae" / "mnist")


def test_an_ignored_xdg_cache_home_is_said_where_the_cache_is_listed(tmp_path, monkeypatch):
    """A quoted ~ (a .env file, a service's unit) is not expanded, and the spec says to ignore it:
    the search list says so, or the user looks for the files in the folder they meant."""
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "~/cache")
    monkeypatch.setitem(SYSTEM_DIRS, "mnist", ())
    with pytest.raises(DatasetNotFoundError, match=r"\(user cache; \$XDG_CACHE_HOME=~/cache ignored: not an "
                                                   r"absolute path\)"):
        load_split("mnist", "t10k", download=False)


@pytest.mark.parametrize("home", ["", "relative/home"])
def test_an_empty_or_relative_home_is_passed_over_for_the_users_home(monkeypatch, home):
    """A cron job's or a service's HOME: not /.cache, nor a cache relative to the current folder."""
    pwd = pytest.importorskip("pwd")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", home)
    assert cache_dir("mnist") == os.path.join(pwd.getpwuid(os.getuid()).pw_dir, ".cache", "npvae", "mnist")

    def no_entry(uid):                 # a container's user with no entry in the password database
        raise KeyError(f"getpwuid(): uid not found: {uid}")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    assert cache_dir("mnist") == os.path.join(tempfile.gettempdir(), ".cache", "npvae", "mnist")


def test_offline_error_message(tmp_path, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(SYSTEM_DIRS, "fashion-mnist", (str(tmp_path / "sys"),))
    make_split(tmp_path / "xdg" / "npvae" / "fashion-mnist", 3, "train")  # half there
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", download=False)
    msg = str(info.value)
    looked = [str(tmp_path / "env" / "fashion-mnist"), str(tmp_path / "env") + " ",
              str(tmp_path / "xdg" / "npvae" / "fashion-mnist"), str(tmp_path / "sys")]
    positions = [msg.index(p) for p in looked]
    assert positions == sorted(positions), msg
    assert "missing t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]" in msg
    assert "folder does not exist" in msg
    assert "download=False" in msg and "is not set" not in msg
    assert f"put the files (gzip-compressed or not) in {tmp_path / 'xdg' / 'npvae' / 'fashion-mnist'}" in msg
    assert "data_dir=" in msg
    assert isinstance(info.value, FileNotFoundError)


def _report_for(folder):
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist", data_dir=folder)
    return str(info.value)


def test_the_search_report_says_what_stands_where_a_file_should_be(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").mkdir()
    (folder / "t10k-labels-idx1-ubyte.gz").symlink_to(tmp_path / "nowhere")
    msg = _report_for(folder)
    assert "t10k-images-idx3-ubyte.gz is a folder" in msg
    assert "t10k-labels-idx1-ubyte.gz is a link to nothing" in msg


def test_the_search_report_says_why_a_folder_cannot_be_searched(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert "cannot look into it: Too many levels of symbolic links" in _report_for(loop)
    (tmp_path / "file").write_text("")
    assert "(data_dir): not a folder" in _report_for(tmp_path / "file")
    assert "(data_dir): folder does not exist" in _report_for(tmp_path / "absent")
    (tmp_path / "dangling").symlink_to(tmp_path / "absent")
    assert "(data_dir): a link to nothing" in _report_for(tmp_path / "dangling")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_the_search_report_says_a_folder_cannot_be_read(tmp_path):
    folder = tmp_path / "locked"
    make_split(folder, 3, "t10k", rows=28, cols=28)
    folder.chmod(0)
    try:
        assert "(data_dir): cannot look into it: permission denied" in _report_for(folder)
    finally:
        folder.chmod(0o755)


def test_data_dir_and_the_environment_variable_expand_a_tilde(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    make_split(tmp_path / "data", 3, "t10k", rows=28, cols=28)
    assert len(load_split("mnist", data_dir="~/data")[0]) == 3
    monkeypatch.setenv("NPVAE_DATA_DIR", "~/data")
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the folder exists: no word of one that does not
        assert len(load_split("mnist", download=False)[0]) == 3


def test_a_broken_file_in_the_cache_says_how_to_replace_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    folder = tmp_path / "xdg" / "npvae" / "mnist"
    make_split(folder, 3, "t10k", rows=28, cols=28)
    path = folder / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataFileError) as info:
        load_split("mnist", download=False)
    assert any("download cache" in n and "delete it" in n for n in info.value.__notes__)
    with pytest.raises(DataFileError) as info:          # a file of the user's own: not to be deleted
        load_split("mnist", data_dir=shutil.copytree(folder, tmp_path / "own"))
    assert not any("download cache" in n for n in getattr(info.value, "__notes__", []))


def test_a_cache_that_cannot_be_written_is_not_called_being_offline(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    monkeypatch.setitem(SYSTEM_DIRS, "mnist", ())
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist")
    msg = str(info.value)
    assert f"cannot be made: {tmp_path / 'afile'} is a file, not a folder" in msg and "XDG_CACHE_HOME" in msg
    assert f"remove or rename the file {tmp_path / 'afile'}, or set" in msg     # not: put the files into it
    assert "To fix: put the files (gzip-compressed or not) in" not in msg
    assert "($NPVAE_DATA_DIR is not set.)" in msg
    assert "online" not in msg


def test_a_cache_folder_that_cannot_be_written_says_why(tmp_path, monkeypatch):
    """A read-only cache (simulated: the folder cannot be made for want of permission)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    monkeypatch.setitem(SYSTEM_DIRS, "mnist", ())

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)
    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist")
    msg = str(info.value)
    assert "cannot write into the cache folder" in msg and "Permission denied" in msg
    assert "To fix: put the files (gzip-compressed or not) in" in msg and "online" not in msg


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_a_download_with_no_room_names_the_file_and_says_to_make_room(tmp_path, monkeypatch, code):
    """A full disk or a file-size limit is not a folder one cannot write: the advice was to set
    XDG_CACHE_HOME to a folder one can write, naming no file."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    monkeypatch.setitem(SYSTEM_DIRS, "mnist", ())
    target = os.path.join(cache_dir("mnist"), "t10k-images-idx3-ubyte.gz")
    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code), target)
    monkeypatch.setattr(npvae.data.datasets, "download_dataset", full)
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist")
    msg = str(info.value)
    assert f"Downloading stopped: no room to write {target}: {os.strerror(code)}" in msg, msg
    assert "make room for them in" in msg and "ulimit -f" in msg and "a folder you can write" not in msg
    lines = cli.describe(info.value)
    assert f"no room to write {target}" in lines and "make room" in lines and "a folder you can write" not in lines
    def full_naming_nothing(*args, **kwargs):               # a write() error names no file
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(npvae.data.datasets, "download_dataset", full_naming_nothing)
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("mnist")
    assert f"no room to write into {cache_dir('mnist')}: " in str(info.value) and "None" not in str(info.value)


def test_load_split_needs_only_its_two_files(tmp_path, monkeypatch):
    imgs, _ = make_split(tmp_path / "mnist", 9, "t10k", rows=28, cols=28)
    x, y = load_split("mnist", "t10k", data_dir=tmp_path, download=False)
    np.testing.assert_array_equal(x, imgs)
    with pytest.raises(DatasetNotFoundError, match="train-images"):
        load_split("mnist", "train", data_dir=tmp_path)


def test_names(tmp_path):
    assert canonical_name("MNIST") == "mnist" and canonical_name(" Fashion-MNIST\n") == "fashion-mnist"
    assert {canonical_name(a) for a in ("fashion-mnist", "fashion_mnist", "fmnist")} == {"fashion-mnist"}
    with pytest.raises(InputError, match="mnist, fashion-mnist"):
        load_dataset("cifar10", download=False)
    with pytest.raises(InputTypeError, match="name"):
        load_dataset(3)
    assert [o for _, o in search_path("mnist", data_dir=tmp_path)] == ["data_dir/mnist", "data_dir"]


def test_the_example_scripts_test_split_is_not_a_data_set_and_the_error_says_how_to_make_it():
    with pytest.raises(InputError, match=r"train_mnist\.py's split .*split\(\*load_split\('mnist', 't10k'"):
        load_dataset("mnist-test-split", data_dir=SAMPLE)
    (train, _), (test, _) = split(*load_split("mnist", "t10k", data_dir=SAMPLE), 800)    # as it says
    assert len(train) == 800 and len(test) == 200


# ----------------------------------------------------------------------------- batches

def test_to_float():
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = to_float(pixels)
    assert x.dtype == np.float32 and x.shape == (16, 16)
    assert x[0, 0] == 0.0 and x[-1, -1] == 1.0
    np.testing.assert_array_equal(x.ravel(), np.arange(256, dtype=np.float32) / np.float32(255))
    out = np.empty((16, 16), np.float64)
    assert to_float(pixels, out=out) is out
    np.testing.assert_allclose(out.ravel(), np.arange(256) / 255, rtol=0, atol=1e-16)
    with pytest.raises(InputTypeError, match="uint8.*already holds floats: use it as it is"):
        to_float(x)
    with pytest.raises(InputError, match="shape"):
        to_float(pixels, out=np.empty((2, 2), np.float32))
    with pytest.raises(InputTypeError, match="dtype"):
        to_float(pixels, dtype=np.int32)
    for dtype in (np.int32, np.float16):
        with pytest.raises(InputTypeError, match="out.dtype"):
            to_float(pixels, out=np.empty((16, 16), dtype))
    frozen = np.empty((16, 16), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(InputError, match="out is read-only"):
        to_float(pixels, out=frozen)


def test_binarize():
    rng = np.random.default_rng(0)
    x = np.full((200, 500), 0.3, np.float32)
    b = binarize(x, rng)
    assert b.dtype == np.float32 and set(np.unique(b)) <= {0.0, 1.0}
    assert abs(b.mean() - 0.3) < 0.01
    assert binarize(np.zeros((3, 4)), rng).sum() == 0
    assert binarize(np.ones((3, 4)), rng).min() == 1.0
    a1 = binarize(x, np.random.default_rng(5))
    a2 = binarize(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a1, a2)
    with pytest.raises(InputTypeError, match="rng"):
        binarize(x, 5)
    with pytest.raises(InputTypeError, match="float"):
        binarize(np.zeros(3, np.uint8), rng)


def test_to_float_refuses_a_masked_array_whose_hidden_pixels_it_would_scale():
    with pytest.raises(InputTypeError, match=r"batch is a masked array.*filled"):
        to_float(np.ma.masked_equal(np.arange(12, dtype=np.uint8).reshape(3, 4), 0))


def test_binarize_refuses_a_masked_array_that_hides_a_nan():
    with pytest.raises(InputTypeError, match=r"x is a masked array"):
        binarize(np.ma.masked_invalid(np.array([[0.5, np.nan]])), np.random.default_rng(0))


def test_binarize_draws_the_same_pixels_from_floats_in_either_byte_order():
    x = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    want = binarize(x, np.random.default_rng(5))
    got = binarize(x.astype(">f4"), np.random.default_rng(5))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("bad, match", [(np.nan, r"nan at index \(0, 1\)"), (np.inf, "inf"),
                                        (1.5, r"\[0, 1\]"), (-0.1, r"\[0, 1\]"),
                                        (200.0, "divide by 255")])
def test_binarize_refuses_what_is_not_a_probability(bad, match):
    x = np.array([[0.2, bad, 0.5]])
    with pytest.raises(InputError, match=match):
        binarize(x, np.random.default_rng(0))


def test_iterate_minibatches_covers_every_row_once():
    images = np.arange(103 * 2, dtype=np.uint8).reshape(103, 2)
    batches = list(iterate_minibatches(images, 10, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [10] * 10 + [3]  # last partial batch kept
    assert all(b.dtype == np.uint8 and b.shape[1] == 2 for b in batches)
    seen = np.concatenate(batches)[:, 0] // 2
    assert sorted(seen) == list(range(103))
    assert not np.array_equal(seen, np.arange(103))  # actually shuffled


def test_iterate_same_seed_same_order_new_epoch_new_order():
    a = list(iterate_indices(50, 7, np.random.default_rng(42)))
    b = list(iterate_indices(50, 7, np.random.default_rng(42)))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    rng = np.random.default_rng(42)
    epoch1 = np.concatenate(list(iterate_indices(50, 7, rng)))
    epoch2 = np.concatenate(list(iterate_indices(50, 7, rng)))
    assert not np.array_equal(epoch1, epoch2)


def test_iterate_drop_last_and_no_shuffle():
    batches = list(iterate_indices(23, 5, shuffle=False, drop_last=True))
    assert [b.tolist() for b in batches] == [list(range(i, i + 5)) for i in range(0, 20, 5)]
    assert [len(b) for b in iterate_indices(20, 5, shuffle=False, drop_last=True)] == [5] * 4
    assert list(iterate_indices(3, 5, shuffle=False, drop_last=True)) == []
    assert [len(b) for b in iterate_indices(3, 5, shuffle=False)] == [3]
    assert list(iterate_indices(0, 5, shuffle=False)) == []


def test_iterate_errors_raise_at_call():
    images = np.zeros((10, 4), np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="batch_size"):
        iterate_minibatches(images, 0, rng)
    with pytest.raises(InputTypeError, match="batch_size"):
        iterate_minibatches(images, 2.5, rng)
    with pytest.raises(InputTypeError, match="batch_size"):
        iterate_minibatches(images, True, rng)
    with pytest.raises(InputTypeError, match="rng"):
        iterate_minibatches(images, 2)  # shuffling needs a generator
    with pytest.raises(InputTypeError, match="rng"):
        iterate_minibatches(images, 2, rng=0)
    with pytest.raises(InputError, match="2-D"):
        iterate_minibatches(np.zeros((2, 28, 28), np.uint8), 2, rng)
    with pytest.raises(InputTypeError, match="images"):
        iterate_minibatches([[1, 2]], 2, rng)


def test_split():
    images = np.arange(10 * 3).reshape(10, 3)
    labels = np.arange(10)
    (xa, ya), (xb, yb) = split(images, labels, 8)
    assert xa.shape == (8, 3) and xb.shape == (2, 3)
    np.testing.assert_array_equal(ya, np.arange(8))
    np.testing.assert_array_equal(yb, [8, 9])
    assert np.shares_memory(xa, images)
    with pytest.raises(InputError, match="n_train"):
        split(images, labels, 11)
    (xa, _), (xb, _) = split(images, labels, 10)         # all of it to train on: allowed
    assert len(xa) == 10 and len(xb) == 0
    with pytest.raises(InputError, match="same length"):
        split(images, labels[:9], 5)
    with pytest.raises(InputTypeError, match="n_train"):
        split(images, labels, 8.0)
    with pytest.raises(InputError, match="images must be an array of rows"):
        split(np.array(5), np.array(5), 0)


# ----------------------------------------------------------------------------- real data

REAL = os.environ.get("NPVAE_TEST_DATA", "")


@pytest.mark.skipif(not (REAL and os.path.isdir(os.path.join(REAL, "mnist"))
                         and os.path.isdir(os.path.join(REAL, "fashion-mnist"))),
                    reason="set NPVAE_TEST_DATA to a folder holding mnist/ and fashion-mnist/")
def test_real_data(monkeypatch):
    fashion = load_dataset("fashion-mnist", data_dir=REAL, download=False)
    assert fashion.train_images.shape == (60000, 784) and fashion.train_images.dtype == np.uint8
    assert fashion.test_images.shape == (10000, 784)
    assert fashion.train_labels.shape == (60000,) and fashion.train_labels.max() == 9

    monkeypatch.setenv("NPVAE_DATA_DIR", REAL)  # the same files through the env var
    images, labels = load_split("mnist", "t10k", download=False)
    assert images.shape == (10000, 784) and labels.shape == (10000,)
    assert np.bincount(labels).tolist()[:2] == [980, 1135]  # MNIST test digits 0 and 1
    (x_train, _), (x_held, _) = split(images, labels, 8000)
    assert x_train.shape == (8000, 784) and x_held.shape == (2000, 784)

    path = os.path.join(REAL, "mnist", "t10k-images-idx3-ubyte.gz")
    want = "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    with gzip.open(path, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == want
    # The reader's array re-encoded as IDX gives back the very same bytes.
    again = idx_bytes(images.reshape(10000, 28, 28))
    assert hashlib.sha256(again).hexdigest() == want


@pytest.mark.skipif(not (REAL and os.path.isdir(os.path.join(REAL, "mnist"))
                         and os.path.isdir(os.path.join(REAL, "fashion-mnist"))),
                    reason="set NPVAE_TEST_DATA to a folder holding mnist/ and fashion-mnist/")
def test_one_data_set_is_not_taken_for_the_other(monkeypatch):
    """Both use the same file names: a folder of one must not load as the other."""
    fashion, mnist = os.path.join(REAL, "fashion-mnist"), os.path.join(REAL, "mnist")
    with pytest.raises(DataFileError, match="holds the Fashion-MNIST test images, not MNIST's.*point to the "
                                            r"mnist folder \(data_dir, --data-dir or \$NPVAE_DATA_DIR/mnist\)"):
        load_split("mnist", "t10k", data_dir=fashion, download=False)
    with pytest.raises(DataFileError, match="holds the Fashion-MNIST training images, not MNIST's"):
        load_dataset("mnist", data_dir=fashion, download=False)
    with pytest.raises(DataFileError, match="holds the MNIST test images, not Fashion-MNIST's"):
        load_split("fashion-mnist", "t10k", data_dir=mnist, download=False)
    monkeypatch.setenv("NPVAE_DATA_DIR", fashion)       # a data set's own folder, not their parent
    with pytest.raises(DataFileError, match="not MNIST's"):
        load_split("mnist", "t10k", download=False)
    assert load_split("fashion-mnist", "t10k", download=False)[0].shape == (10000, 784)


@pytest.mark.skipif(not (REAL and os.path.isdir(os.path.join(REAL, "mnist"))
                         and os.path.isdir(os.path.join(REAL, "fashion-mnist"))),
                    reason="set NPVAE_TEST_DATA to a folder holding mnist/ and fashion-mnist/")
@pytest.mark.parametrize("name, other", [("mnist", "fashion-mnist"), ("fashion-mnist", "mnist")])
def test_labels_of_the_other_data_set_beside_the_right_images_are_refused(tmp_path, name, other):
    """A folder put together from two downloads: the right images, the other data set's labels
    (the same count, the same 0..9). They would label the figures wrong (the 'first 6' a 1)."""
    for stem, source in (("t10k-images-idx3-ubyte.gz", name), ("t10k-labels-idx1-ubyte.gz", other)):
        shutil.copy(os.path.join(REAL, source, stem), tmp_path / stem)
    title = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
    with pytest.raises(DataFileError, match=rf"t10k-labels-idx1-ubyte.gz holds the {title[other]} test labels, "
                                            rf"not {title[name]}'s"):
        load_split(name, "t10k", data_dir=tmp_path, download=False)


@pytest.mark.skipif(not (REAL and os.path.isdir(os.path.join(REAL, "fashion-mnist"))),
                    reason="set NPVAE_TEST_DATA to a folder holding fashion-mnist/")
def test_test_files_under_the_training_names_are_refused(tmp_path):
    """The test files copied to the training names (to get a 'full' folder offline), or the two
    swapped: every test figure would be measured on training images."""
    def folder(name, source_of):          # each part's two files copied from split source_of[part]
        (tmp_path / name).mkdir()
        for part, source in source_of.items():
            for kind in ("images-idx3", "labels-idx1"):
                shutil.copy(os.path.join(REAL, "fashion-mnist", f"{source}-{kind}-ubyte.gz"),
                            tmp_path / name / f"{part}-{kind}-ubyte.gz")
        return tmp_path / name

    copied = folder("copied", {"train": "t10k", "t10k": "t10k"})
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte.gz holds the Fashion-MNIST test images, "
                                            r"not its training images"):
        load_dataset("fashion-mnist", data_dir=copied, download=False)
    for name in ("t10k", "test"):           # the test files under their own names are fine
        assert load_split("fashion-mnist", name, data_dir=copied, download=False)[0].shape == (10000, 784)
    with pytest.raises(DataFileError, match=r"holds the Fashion-MNIST (test|training) images, not its "
                                            r"(training|test) images"):
        load_dataset("fashion-mnist", data_dir=folder("swapped", {"train": "t10k", "t10k": "train"}), download=False)


@pytest.mark.parametrize("name", ["idx", "datasets", "download"])
def test_the_old_module_names_still_work_with_a_deprecation_warning(name):
    """npvae.idx, npvae.datasets and npvae.download moved into npvae.data."""
    import importlib
    import sys
    sys.modules.pop(f"npvae.{name}", None)
    with pytest.warns(DeprecationWarning, match=f"npvae.{name} is deprecated.*npvae.data.{name}"):
        old = importlib.import_module(f"npvae.{name}")
    new = importlib.import_module(f"npvae.data.{name}")
    public = [n for n in vars(new) if not n.startswith("_") and callable(getattr(new, n))]
    assert public and all(getattr(old, n) is getattr(new, n) for n in public)


@pytest.mark.parametrize("name", ["idx", "datasets", "download"])
def test_the_old_module_names_work_as_attributes_of_npvae_too(name, monkeypatch):
    """An older ``import npvae`` imported them, so ``npvae.datasets.load_dataset`` worked without
    an import of its own: it still does, with the warning pointing at the user's line."""
    import importlib
    import npvae
    monkeypatch.delitem(vars(npvae), name, raising=False)    # as after a plain import npvae
    with pytest.warns(DeprecationWarning, match=f"npvae.{name} is deprecated.*npvae.data.{name}") as caught:
        old = getattr(npvae, name)
    assert old is importlib.import_module(f"npvae.data.{name}") and caught[0].filename == __file__


def test_an_epoch_covers_every_row():                                       # K08
    for n in range(0, 23):
        for bs in (1, 4, 5, 7, 30):
            idx = np.concatenate([np.zeros(0, int), *iterate_indices(n, bs, shuffle=False)])
            assert np.array_equal(idx, np.arange(n))


def _write_big_endian_idx(path, arr, code):
    import struct
    with open(path, "wb") as f:
        f.write(bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_read_images_refuses_a_non_uint8_image_file(tmp_path):             # I01
    _write_big_endian_idx(tmp_path / "i16", np.zeros((2, 3, 3), np.int16), 0x0B)
    with pytest.raises(DataFileError, match="uint8"):
        read_images(tmp_path / "i16")


@pytest.mark.parametrize("labels, said", [([0, 9, 10], "label 10 at index 2"),
                                         ([0, 10, 12], "label 10 at index 1")])     # the first, not the largest
def test_label_10_is_refused_when_loading_by_name(tmp_path, labels, said):  # K03
    from npvae.data import load_split
    _write_big_endian_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), 0x08)
    _write_big_endian_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array(labels, np.uint8), 0x08)
    with pytest.raises(DataFileError, match=said):
        load_split("mnist", "t10k", data_dir=tmp_path, download=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, ">f4", ">f8"])
def test_binarize_draws_uniforms_in_the_images_float_dtype(dtype):
    x = np.random.default_rng(1).random((20, 30)).astype(dtype)
    draw = np.random.default_rng(5).random(x.shape, dtype=x.dtype.newbyteorder("="))
    assert np.array_equal(binarize(x, np.random.default_rng(5)), (draw < x).astype(x.dtype))


def test_the_parent_of_a_data_sets_folder_is_pointed_at_it_when_no_data_set_is_named(tmp_path):
    """The layout the docs recommend (DIR/mnist, DIR/fashion-mnist): load_idx_split(DIR) said only
    "missing", where any other subfolder's name got "point there"."""
    shutil.copytree(SAMPLE, tmp_path / "mnist")
    with pytest.raises(DatasetNotFoundError, match=rf"; they are in {tmp_path / 'mnist'}: point there$"):
        npvae.data.load_idx_split(tmp_path, "t10k")
    shutil.copytree(SAMPLE, tmp_path / "fashion-mnist")
    with pytest.raises(DatasetNotFoundError, match=rf"; they are in {tmp_path / 'fashion-mnist'} and in "
                                                   rf"{tmp_path / 'mnist'}: point at the one you mean$"):
        npvae.data.load_idx_split(tmp_path, "t10k")
    assert len(npvae.data.load_idx_split(tmp_path / "mnist", "t10k")[0]) > 0


def test_a_gzip_header_claiming_just_more_than_the_file_can_hold_is_refused_before_reading(tmp_path):
    """A claim just past deflate's 1032:1 ratio (the other tests claim far more) is refused up
    front, with the message that says the header cannot be right, not by a decompression that
    runs out later."""
    path = tmp_path / "claims.gz"
    header = lambda n: bytes([0, 0, 8, 1]) + struct.pack(">I", n)     # noqa: E731
    body = bytes(100)
    data = gzip.compress(header(1) + body, mtime=0)
    for _ in range(5):              # the claim is one byte past 1032 * (the file's size) + 1024 bytes
        n = 1032 * len(data) + 1024 - 8 + 1
        data, before = gzip.compress(header(n) + body, mtime=0), data
        if len(data) == len(before):
            break
    assert 1032 * len(data) + 1024 < 8 + n
    path.write_bytes(data)
    with pytest.raises(DataFileError, match=r"cannot hold more than about"):
        read_idx(path)
