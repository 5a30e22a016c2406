"""Telling the data sets apart: fingerprints of images, and of the files we know.

MNIST and Fashion-MNIST use the same four file names and the same format, so a folder
of one passes for the other (a ``--data-dir`` pointing at the wrong one, or
``$NPVAE_DATA_DIR`` set to a data set's own folder). The images' fingerprints tell
them apart: a data set loaded by name whose images, or labels, are another known data
set's is refused (the labels too: a folder put together from two downloads would
otherwise label the figures wrong), and so are a data set's test files under its training
names (copied, or swapped). The tables hold the splits whose files were at hand
when they were made; MNIST's training files were not, so they are recognised by nothing here.
"""
import hashlib

import numpy as np

from ..errors import DataFileError, InputTypeError

#: fingerprint(images) -> (data set, split), of the official files.
KNOWN_IMAGES = {
    "f609e18afd38122730cdcf0bf8ea5a8f": ("mnist", "t10k"),
    "6cac66501ddc7c23a8f06c41bc0d75ce": ("fashion-mnist", "train"),
    "2e9d342c841c0fb48e1c2bdf677e2d8e": ("fashion-mnist", "t10k"),
}

#: fingerprint(labels) -> (data set, split), of the official files.
KNOWN_LABELS = {
    "eda3f6bf82a7faf474b24ceef23f1e8c": ("mnist", "t10k"),
    "c9cb9c642865ad6179eb2a3cfa85c4fe": ("fashion-mnist", "train"),
    "10a40714c53e001edd66bbc8b4b4c9f1": ("fashion-mnist", "t10k"),
}

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}
_SPLITS = {"train": "training", "t10k": "test"}


def fingerprint(images):
    """A short hex digest of an array's dtype, shape and every byte: same data, same fingerprint.

    A resumed run compares the fingerprint of its data with the one its run
    recorded, to refuse other data of the same size; loading by name compares it
    with :data:`KNOWN_IMAGES` and :data:`KNOWN_LABELS`. BLAKE2b (16 bytes), about
    1 GB/s: 50 ms for the 60,000 MNIST training images.

    >>> fingerprint(np.zeros((2, 3), np.uint8))
    '7aa6288ee43c14ed7c681f3549932eb3'
    """
    if not isinstance(images, np.ndarray):
        raise InputTypeError(f"images must be a numpy array, got {type(images).__name__}")
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{images.dtype.str} {images.shape}".encode())
    h.update(np.ascontiguousarray(images).data)      # no copy for the usual C-ordered arrays
    return h.hexdigest()


def check_identity(name, array, path, what="images", split=None):
    """Raise DataFileError if ``array`` (read from ``path`` for data set ``name``, split
    ``split``) is another known data set's ``what`` (its ``"images"`` or its ``"labels"``),
    or the same data set's other split (test files copied to the training names, or swapped)."""
    known = {"images": KNOWN_IMAGES, "labels": KNOWN_LABELS}[what]
    other = known.get(fingerprint(array))
    if other is not None and other[0] != name:
        raise DataFileError(f"{path} holds the {_TITLES[other[0]]} {_SPLITS[other[1]]} {what}, not "
                            f"{_TITLES[name]}'s: both use the same file names; point to the "
                            f"{name} folder (data_dir, --data-dir or $NPVAE_DATA_DIR/{name})")
    if other is not None and split is not None and other[1] != split:
        raise DataFileError(f"{path} holds the {_TITLES[name]} {_SPLITS[other[1]]} {what}, not its "
                            f"{_SPLITS[split]} {what}: the {split}-* files must hold the {_SPLITS[split]} "
                            f"split (copied or swapped files would measure the test figures on "
                            f"training images); put the right files there, or remove the copies")
