"""Regenerate ``mnist-sample/``: the first 1,000 images and labels of the MNIST test set.

Usage: ``python tests/data/make_sample.py /path/to/mnist`` (the folder holding
``t10k-images-idx3-ubyte.gz`` and ``t10k-labels-idx1-ubyte.gz``). Writes IDX
files gzip-compressed with a zero timestamp, so the bytes are reproducible.
"""
import gzip
import os
import struct
import sys

N = 1000


def idx(arr):
    """IDX encoding of a uint8 array: two zero bytes, type 0x08, ndim, big-endian sizes, data."""
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def main(src):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from npvae.data import load_idx_split
    images, labels = load_idx_split(src, "t10k")
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist-sample")
    os.makedirs(out, exist_ok=True)
    for name, arr in (("t10k-images-idx3-ubyte.gz", images[:N].reshape(N, 28, 28)),
                      ("t10k-labels-idx1-ubyte.gz", labels[:N])):
        with open(os.path.join(out, name), "wb") as f:
            f.write(gzip.compress(idx(arr), compresslevel=9, mtime=0))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_sample.py /path/to/mnist")
    main(sys.argv[1])
