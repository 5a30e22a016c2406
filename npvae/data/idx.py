"""Reader for the IDX file format used by MNIST and Fashion-MNIST.

An IDX file is a tiny header followed by a dense array in C order::

    bytes 0-1   zero
    byte  2     type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64; multi-byte types are big-endian)
    byte  3     number of dimensions, ndim
    4*ndim      the size of each dimension, big-endian uint32
    rest        the data, prod(sizes) * itemsize bytes

Files are often gzip-compressed (``*.gz``). :func:`read_idx` looks at the
first two bytes (gzip's magic ``1f 8b``) rather than trusting the file name.

The reader is defensive because data files arrive from the network and from
disks that fill up: it checks the whole header *before* allocating the array,
never decompresses more than the header promises (plus one byte, to notice
trailing data, and then at most 1 MiB, so that a corrupt stream's CRC can say
so), and turns every way a file can be broken into a
:class:`~npvae.errors.DataFileError` that names the file and the problem.
"""
import contextlib
import gzip
import os
import stat
import struct
import zlib

import numpy as np

from ..errors import DataFileError, InputTypeError
from ..validate import check_file_path

__all__ = ["IDX_DTYPES", "read_idx", "read_idx_header", "read_images", "read_labels"]

#: IDX type code -> NumPy dtype as stored in the file (big-endian).
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot compress better than about 1032:1, so a gzip file of S bytes
# holds at most ~1032*S bytes. A header promising more is lying; we can say so
# before allocating or decompressing anything.
_GZIP_MAX_RATIO = 1032
_CHUNK = 1 << 20  # decompress 1 MiB at a time

# Everything the gzip/zlib/struct machinery raises on bad input. BadGzipFile
# is an OSError; a truncated stream raises EOFError; a bad deflate block
# raises zlib.error.
_CORRUPT = (OSError, EOFError, zlib.error, struct.error, ValueError)


def _check_path(path):
    """``path`` as a str; refused if it is None or names something other than a regular file
    (a FIFO would block the read forever). A missing file is left to ``open``'s error."""
    path = check_file_path(path, "path")
    if path is None:
        raise InputTypeError("path must be an IDX file's path (str or os.PathLike), got None")
    with contextlib.suppress(OSError):
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise DataFileError(f"{path}: not a regular file (a pipe or a device?); give an IDX file")
    return path


def read_idx(path):
    """Read an IDX file (raw or gzip-compressed) into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        Array with the shape and type given by the header, in native byte
        order (big-endian values are byte-swapped).

    Raises
    ------
    DataFileError
        If the file is empty, truncated, not IDX, has an unknown type code or
        number of dimensions, holds more or fewer data bytes than the header
        says, or is a corrupt gzip stream. The message names the file.
    OSError
        If the file cannot be opened or read (``FileNotFoundError``, ``PermissionError``,
        an I/O error); it names the file.
    """
    path = _check_path(path)
    with open(path, "rb") as f, _naming(path):
        size = os.fstat(f.fileno()).st_size
        start = f.read(2)
        f.seek(0)
        if start == _GZIP_MAGIC:
            return _read_gzip(path, f, size)
        return _read_raw(path, f, size)


@contextlib.contextmanager
def _naming(path):
    """An OSError inside names ``path``: a failed read of an open file names none."""
    try:
        yield
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), path) from e


def read_idx_header(path):
    """``(dtype, shape)`` from an IDX file's header, without reading its data.

    For a look at a file's shape (e.g. 28x28 images) before loading it.

    Raises
    ------
    DataFileError
        If the header is malformed or the gzip stream is corrupt.
    """
    path = _check_path(path)
    with open(path, "rb") as f, _naming(path):
        if f.read(2) != _GZIP_MAGIC:
            f.seek(0)
            dtype, shape, _ = _parse_header(path, f.read)
            return dtype, shape
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                dtype, shape, _ = _parse_header(path, gz.read)
        except DataFileError:
            raise
        except EOFError:
            raise DataFileError(f"{path}: gzip stream ends early (file truncated?)") from None
        except _CORRUPT as e:
            raise DataFileError(f"{path}: corrupt gzip data: {e}") from None
        return dtype, shape


def read_images(path):
    """Read an IDX image file.

    Each row is one image flattened in row-major order (28*28 = 784 pixels
    for MNIST), which is the layout a dense network wants.

    Parameters
    ----------
    path : str or os.PathLike
        The file, gzip-compressed or not (as :func:`read_idx`).

    Returns
    -------
    numpy.ndarray (N, rows*cols), uint8

    Raises
    ------
    DataFileError
        If the file is not a valid IDX file, or not 3-D ``uint8``
        (images x rows x cols).
    """
    arr = read_idx(path)
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise DataFileError(
            f"{path}: expected an IDX image file (3 dimensions, uint8 type code 0x08), "
            f"got {arr.ndim} dimension(s) {arr.shape} of type {arr.dtype}")
    return arr.reshape(arr.shape[0], arr.shape[1] * arr.shape[2])


def read_labels(path):
    """Read an IDX label file.

    Parameters
    ----------
    path : str or os.PathLike
        The file, gzip-compressed or not (as :func:`read_idx`).

    Returns
    -------
    numpy.ndarray (N,), uint8

    Raises
    ------
    DataFileError
        If the file is not a valid IDX file, or not 1-D ``uint8``.
    """
    arr = read_idx(path)
    if arr.ndim != 1 or arr.dtype != np.uint8:
        raise DataFileError(
            f"{path}: expected an IDX label file (1 dimension, uint8 type code 0x08), "
            f"got {arr.ndim} dimension(s) {arr.shape} of type {arr.dtype}")
    return arr


# What a file that is not IDX often is (first bytes, after one gzip layer if any), and what to do.
_OTHER_FORMATS = (
    (b"\x1f\x8b", "gzip data inside gzip (compressed twice?): decompress it once, with gunzip"),
    (b"PK\x03\x04", "a zip archive: unzip it and use the files inside"),
    (b"BZh", "bzip2 data: decompress it with bunzip2"),
    (b"\xfd7zX", "xz data: decompress it with unxz"),
    (b"<", "text, HTML or XML (a web page saved in place of the file?)"),
)


def _parse_header(path, read):
    """Read and check the header with ``read(n)``; return (dtype, shape, header_len)."""
    head = read(4)
    if len(head) == 0:
        raise DataFileError(f"{path}: file is empty; expected an IDX file")
    if len(head) < 4:
        raise DataFileError(f"{path}: truncated IDX header: {len(head)} byte(s), expected at least 4")
    if head[0] != 0 or head[1] != 0:
        what = next((f", {kind}" for magic, kind in _OTHER_FORMATS if head.startswith(magic)), "")
        raise DataFileError(
            f"{path}: not an IDX file: the magic number must start with two zero bytes, "
            f"got {head[:4].hex(' ')}{what}")
    code, ndim = head[2], head[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFileError(f"{path}: unknown IDX type code 0x{code:02X}; expected one of {known}")
    if not 1 <= ndim <= 4:
        raise DataFileError(f"{path}: IDX header says {ndim} dimensions; expected 1 to 4")
    dims_bytes = read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise DataFileError(
            f"{path}: truncated IDX header: {ndim} dimensions need {4 * ndim} bytes of sizes, "
            f"got {len(dims_bytes)}")
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    return IDX_DTYPES[code], shape, 4 + 4 * ndim


def _n_bytes(shape, dtype):
    """Payload size in bytes; Python ints, so no overflow for absurd headers."""
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def _finish(path, buf, dtype, shape):
    """View the raw bytes as the IDX dtype, in native byte order, with ``shape``."""
    arr = buf.view(dtype)
    if dtype.byteorder == ">":
        arr.byteswap(inplace=True)
        arr = arr.view(dtype.newbyteorder("="))
    try:
        return arr.reshape(shape)
    except ValueError:       # e.g. a 0 dimension beside ones too large for any array
        raise DataFileError(f"{path}: IDX header says shape {shape}, which no array can have "
                            f"(corrupt header?)") from None


def _allocate(path, n, shape, dtype):
    """``np.empty(n, uint8)``, turning an impossible size into a DataFileError."""
    try:
        return np.empty(n, dtype=np.uint8)
    except MemoryError:
        raise DataFileError(
            f"{path}: IDX header says shape {shape} of {dtype.name} = {n} data bytes, "
            f"more than fits in memory (corrupt header?)") from None


def _read_raw(path, f, size):
    dtype, shape, header_len = _parse_header(path, f.read)
    expected = _n_bytes(shape, dtype)
    actual = size - header_len
    # Compare with the file size before allocating: a header claiming 2**31
    # images fails here, not in np.empty.
    if actual != expected:
        raise DataFileError(
            f"{path}: IDX header says shape {shape} of {dtype.name} = {expected} data bytes, "
            f"but the file holds {actual} after the {header_len}-byte header"
            + (" (file truncated?)" if actual < expected else " (trailing bytes)"))
    buf = _allocate(path, expected, shape, dtype)
    got = f.readinto(memoryview(buf)) if expected else 0
    if got != expected:  # the file shrank while we read it
        raise DataFileError(f"{path}: read {got} of {expected} data bytes; the file changed or is truncated")
    return _finish(path, buf, dtype, shape)


#: bytes read past the data a gzip header announces, to tell trailing bytes from a corrupt stream
_TRAILING_READ = 1 << 20


def _read_gzip(path, f, size):
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            dtype, shape, header_len = _parse_header(path, gz.read)
            expected = _n_bytes(shape, dtype)
            limit = _GZIP_MAX_RATIO * size + 1024
            if header_len + expected > limit:
                raise DataFileError(
                    f"{path}: IDX header says shape {shape} of {dtype.name} = {expected} data bytes, "
                    f"but a {size}-byte gzip file cannot hold more than about {limit} bytes "
                    f"(corrupt header or truncated file)")
            buf = _allocate(path, expected, shape, dtype)
            view = memoryview(buf)
            pos = 0
            # Decompress in chunks straight into the array: never more than the
            # header promised, so a lying header or a gzip bomb costs nothing.
            while pos < expected:
                n = gz.readinto(view[pos:pos + _CHUNK])
                if n == 0:
                    raise DataFileError(
                        f"{path}: IDX header says shape {shape} of {dtype.name} = {expected} data bytes, "
                        f"but the decompressed file ends after {pos} (file truncated?)")
                pos += n
            # One more byte: should be end of stream, which also makes gzip
            # check the CRC and length trailer.
            if gz.read(1):
                # A corrupt stream often decompresses too long: read on a little, so that its
                # CRC, if wrong, is what the message says (a bounded read: no gzip bomb)
                extra = 1
                while extra < _TRAILING_READ and (n := len(gz.read(_CHUNK))):
                    extra += n
                raise DataFileError(
                    f"{path}: trailing bytes after the {expected} data bytes that the IDX header "
                    f"announces (shape {shape} of {dtype.name})")
    except DataFileError:
        raise
    except EOFError:
        raise DataFileError(f"{path}: gzip stream ends early (file truncated?)") from None
    except _CORRUPT as e:
        raise DataFileError(f"{path}: corrupt gzip data: {e}") from None
    return _finish(path, buf, dtype, shape)
