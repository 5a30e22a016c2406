"""Downloading the MNIST and Fashion-MNIST files, safely.

Each file is fetched with :mod:`urllib` (no extra dependency) into a
temporary file in the destination folder, its MD5 is computed while it
streams, and only a complete file with the right checksum is renamed into
place with ``os.replace``. Whatever goes wrong (no connection, a dropped
connection, a wrong checksum, Ctrl-C) the temporary file is removed, so the
cache never holds a partial file that a later run would trust. Mirrors are
tried in order; if all fail, :class:`~npvae.errors.DownloadError` lists what
each one said.

Tests and users behind a proxy can pass their own ``mirrors`` and
``checksums``; the tables below are only defaults.
"""
import contextlib
import hashlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping

from ..atomic import default_file_mode, rename_into_place
from ..errors import DataFileError, DownloadError, InputError, InputTypeError
from ..progress import Bar, emit, is_terminal
from ..signals import cleanup_on_sigterm
from ..validate import check_bool, check_file_path, check_folder_path, check_positive_float
from .idx import read_idx

__all__ = ["MIRRORS", "MD5", "TIMEOUT", "LOG_EVERY", "download_file", "download_dataset"]

#: Base URLs per data set, tried in this order; a file's URL is base + file name.
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
}

#: MD5 of the official .gz files (what the mirrors serve).
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83fd310",
    },
}

#: The default ``timeout`` of :func:`download_file` and :func:`download_dataset` (seconds): how
#: long to wait for the server to connect, to send anything, and to send the next 64 KiB.
TIMEOUT = 30.0

#: Off a terminal (a log), a download in progress prints a plain line this often (seconds).
LOG_EVERY = 10.0

_CHUNK = 1 << 16
# The largest official file is ~26 MB compressed; a server that sends far
# more is misbehaving and must not fill the disk.
_MAX_BYTES = 200 * 1024 * 1024
_USER_AGENT = "npvae (python urllib)"
# A download in progress writes its partial file at least every TIMEOUT seconds;
# one untouched for this long belongs to a process that was killed.
_STALE_PART = 600.0


class _WriteError(Exception):
    """Writing the partial file failed (a full disk, say): not the network's fault, no other mirror helps."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


def download_file(url, dest, md5=None, timeout=TIMEOUT, progress=False):
    """Download ``url`` to the file ``dest``, all or nothing.

    Parameters
    ----------
    url : str
        What to fetch.
    dest : str or os.PathLike
        Final path. Its folder is created if needed; the partial download
        lives in a hidden temporary file next to it.
    md5 : str, optional
        Expected hex MD5 of the file. If None, the file is instead checked by
        reading it as an IDX file, so a wrong page (an HTML error page, say)
        never lands in place.
    timeout : float or None
        Seconds to wait to connect, for any data, and for each next 64 KiB: a server slower
        than that is given up on (None: as long as it takes).
    progress : bool
        Show progress on stderr: a bar on a terminal or in a notebook, elsewhere (a log) a
        plain line every ``LOG_EVERY`` seconds of a slow download.

    Returns
    -------
    str
        ``dest``.

    Raises
    ------
    DownloadError
        On any network failure, a short read, or a checksum mismatch. The
        message names the URL. No file is left behind, and no folder that
        this call created.
    OSError
        If the file cannot be written (a full disk, a read-only folder): the
        error names ``dest``; no other mirror is tried.
    """
    url = _check_url(url, "url")
    dest = check_file_path(dest, "dest")
    if dest is None:
        raise InputTypeError("dest must be the file path to download to (str or os.PathLike), got None")
    md5 = _check_md5(md5, "md5")
    timeout = check_timeout(timeout)
    progress = check_bool(progress, "progress")
    folder = os.path.dirname(os.path.abspath(dest))
    created = _makedirs(folder)
    # SIGTERM's default action would end the process before the cleanup below
    with cleanup_on_sigterm():
        try:
            _sweep_stale_parts(folder, os.path.basename(dest))
            fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(dest) + ".", suffix=".part")
        except BaseException as e:
            _remove_empty(created)
            if isinstance(e, OSError) and e.errno is not None:      # a read-only folder: name dest
                raise OSError(e.errno, e.strerror, dest) from e
            raise
        try:
            with os.fdopen(fd, "wb") as out:
                bar = Bar(f"downloading {os.path.basename(dest)}", None, "MB", scale=1e6, fmt=".1f",
                          enabled=progress, log_every=LOG_EVERY)
                digest = _fetch(url, out, timeout, bar)
                out.flush()
                os.fsync(out.fileno())
            if md5 is not None and digest != md5:
                raise DownloadError(f"{url}: checksum mismatch: got md5 {digest}, expected {md5}; "
                                    f"{_what_arrived(tmp)}")
            try:
                if md5 is None:
                    try:
                        read_idx(tmp)
                    except DataFileError as e:     # (named as the file it was to become, not the .part)
                        raise DownloadError(f"{url}: downloaded file is not a valid IDX file: "
                                            f"{str(e).replace(tmp, dest)}") from None
                os.chmod(tmp, default_file_mode(dest))     # mkstemp makes 0600; give the usual mode
                rename_into_place(tmp, dest)             # (on Windows, tried again for a second)
            except FileNotFoundError:
                if os.path.exists(tmp):
                    raise
                raise DownloadError(f"{url}: the partial file {tmp} was removed before it was complete: "
                                    f"another npvae process takes one untouched for {_STALE_PART / 60:g} "
                                    f"minutes (this one stopped, Ctrl-Z?) for a killed download's") from None
        except BaseException as e:
            # Also on Ctrl-C and SIGTERM: a partial file must never stay in the cache.
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            _remove_empty(created)
            if isinstance(e, _WriteError):
                raise OSError(e.error.errno, e.error.strerror, dest) from None
            if isinstance(e, OSError) and not isinstance(e, DownloadError) and e.filename is None \
                    and e.errno is not None:
                raise OSError(e.errno, e.strerror, dest) from e     # fsync: say which file
            raise
    return dest


def _what_arrived(path):
    """What a file whose checksum is not the one expected holds, as far as its first bytes tell."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not size:
        return "the server sent nothing (an empty body)"
    if b"<html" in head.lower() or b"<!doctype" in head.lower():
        return f"the server sent a web page of {size} bytes, not the file (a sign-in page of the network?)"
    if head[:2] == b"\x1f\x8b":
        return (f"a gzip file of {size} bytes arrived: another version of the file, or the same data "
                f"compressed otherwise (if you trust this mirror, put that file in place yourself: it is "
                f"still checked as IDX when it is read)")
    return f"{size} bytes arrived, and they are not a gzip file"


def _check_url(url, name):
    if not isinstance(url, str):
        raise InputTypeError(f"{name} must be a URL string, got {type(url).__name__}")
    if not url:
        raise InputError(f"{name} must be a URL, got an empty string")
    return url


def _check_md5(md5, name):
    """None, or a hex MD5 digest (32 hex digits) as a lower-case str."""
    if md5 is None:
        return None
    if not isinstance(md5, str):
        raise InputTypeError(f"{name} must be a hex MD5 digest (a str of 32 hex digits), "
                             f"got {type(md5).__name__}")
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise InputError(f"{name} must be a hex MD5 digest (32 hex digits), got {md5!r}")
    return md5.lower()


def _check_names(values, name, what):
    """A list of non-empty strs from any iterable but a lone str (which would be split into letters)."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise InputTypeError(f"{name} must be a list of {what}, got {type(values).__name__}"
                             + (f" ({values!r}); write [{values!r}]" if isinstance(values, str) else ""))
    values = list(values)
    for v in values:
        if not isinstance(v, str) or not v:
            raise InputError(f"{name} must be a list of {what}, got an item {v!r}")
    return values


def check_timeout(timeout):
    """Seconds > 0, or None: wait as long as it takes (as urllib's own None)."""
    return None if timeout is None else check_positive_float(timeout, "timeout")


def _makedirs(folder):
    """Create ``folder`` and its missing parents; return those created, outermost first."""
    missing = []
    path = os.path.abspath(folder)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    os.makedirs(folder, exist_ok=True)
    return missing[::-1]


def _remove_empty(created):
    """Remove the folders of ``created`` (outermost first) that are still empty, innermost first."""
    for path in reversed(created):
        try:
            os.rmdir(path)
        except OSError:      # not empty (a file landed there) or already gone
            return


def _sweep_stale_parts(folder, name):
    """Remove partial downloads of ``name`` that a killed process left (untouched for a while)."""
    pattern = re.compile(r"^\." + re.escape(name) + r"\.[a-z0-9_]{8}\.part$")
    now = time.time()
    with os.scandir(folder) as entries:
        for entry in entries:
            if pattern.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > _STALE_PART:
                        os.remove(entry.path)


def _fetch(url, out, timeout, bar):
    """Stream ``url`` into the open file ``out``; return the hex MD5."""
    # imported here, not at the top: they cost ~30 ms, a third of ``import npvae``
    import http.client
    import urllib.error
    import urllib.request
    # What urllib and http.client raise when the network or the server fails:
    # URLError/HTTPError/timeouts/resets are OSErrors, IncompleteRead and
    # BadStatusLine are HTTPExceptions, a malformed URL is a ValueError.
    network_errors = (OSError, http.client.HTTPException, ValueError)
    md5 = hashlib.md5()
    done = 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        # an opener made now, from the environment now: urlopen's is made once, at its first call, and
        # would not use a proxy set after it (in a notebook, after a failed try)
        with urllib.request.build_opener().open(request, timeout=timeout) as resp:
            if resp.headers.get("Content-Type", "").split(";")[0].strip().lower() == "text/html":
                raise DownloadError(f"{_where(url, resp.geturl())}: the server sent a web page (text/html), "
                                    f"not the file: a sign-in page of the network or a proxy?{_proxy_note(url)}")
            length = resp.headers.get("Content-Length")
            length = int(length) if length and length.isdigit() else None
            bar.total = length
            window_start, window_bytes = time.monotonic(), 0
            while True:
                chunk = resp.read1(_CHUNK)       # what has arrived: a slow server still shows progress
                if not chunk:
                    break
                done += len(chunk)
                window_bytes += len(chunk)
                if window_bytes >= _CHUNK:       # each socket read has its timeout; a server that
                    window_start, window_bytes = time.monotonic(), 0     # drips must end too
                elif timeout is not None and time.monotonic() - window_start > timeout:
                    raise DownloadError(f"{url}: too slow: {window_bytes} bytes in the last {timeout:g} s or "
                                        f"more (after {done} bytes), under the 64 KiB asked for; giving up "
                                        f"(timeout=None waits as long as it takes)")
                if done > _MAX_BYTES:
                    raise DownloadError(f"{url}: server sent more than {_MAX_BYTES} bytes; giving up")
                md5.update(chunk)
                try:
                    out.write(chunk)
                except OSError as e:
                    raise _WriteError(e) from None
                bar.update(done)
    except (DownloadError, _WriteError):
        raise
    except urllib.error.HTTPError as e:
        reason = " ".join(str(e.reason).split())     # urllib's redirect-loop reason runs over lines
        raise DownloadError(f"{_where(url, e.geturl())}: HTTP {e.code} {reason}{_proxy_note(url)}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"{url}: cannot connect: {e.reason}{_proxy_note(url)}") from None
    except network_errors as e:
        raise DownloadError(f"{url}: {type(e).__name__}: {e} (after {done} bytes){_proxy_note(url)}") from None
    finally:
        bar.close()        # also on an error: leaves the line for the message that follows
    # http.client returns a short body without complaint when the server
    # closes early, so compare with Content-Length ourselves.
    if length is not None and done != length:
        raise DownloadError(f"{url}: connection dropped after {done} of {length} bytes")
    return md5.hexdigest()


def _where(url, final):
    """``url``, and where it was redirected to if that is elsewhere."""
    return url if not final or final == url else f"{url} (redirected to {final})"


def _proxy_note(url):
    """``" (through the proxy P, from $https_proxy)"`` if the environment sends ``url`` through a
    proxy (then the host that failed may be the proxy), else ``""``."""
    import urllib.parse
    import urllib.request
    try:
        parts = urllib.parse.urlsplit(url)
        proxy = urllib.request.getproxies().get(parts.scheme)
        if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
            return ""
        shown = urllib.parse.urlsplit(proxy)
        if shown.username or shown.password:        # a password must not land in a log
            proxy = shown._replace(netloc=shown.netloc.rpartition("@")[2]).geturl()
    except ValueError:          # a URL or a proxy setting urllib cannot parse: say nothing more
        return ""
    names = (f"{parts.scheme}_proxy", f"{parts.scheme.upper()}_PROXY")
    var = next((name for name in names if os.environ.get(name)), None)
    return f" (through the proxy {proxy}" + (f", from ${var})" if var else ")")


def download_dataset(name, dest, files=None, mirrors=None, checksums=None,
                     progress=True, timeout=TIMEOUT):
    """Download a data set's ``.gz`` files into the folder ``dest``.

    Files already in ``dest`` are kept (files only ever land there complete
    and checked). For each missing file the mirrors are tried in order.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion-mnist"`` (exactly; aliases are resolved by
        :func:`npvae.data.datasets.load_dataset`). Any name works if both
        ``mirrors`` and ``checksums`` are given.
    dest : str or os.PathLike
        Folder to put the files in; created if needed.
    files : iterable of str, optional
        File names to fetch, e.g. ``["t10k-images-idx3-ubyte.gz"]``. Default:
        the four files of the data set (the keys of ``checksums``).
    mirrors : sequence of str, optional
        Base URLs to try in order. Default: ``MIRRORS[name]``.
    checksums : dict of str to str, optional
        File name -> hex MD5. Default: ``MD5[name]``. A file without an entry
        is checked by parsing it as IDX instead.
    progress : bool
        Show progress on stderr, as :func:`download_file` does.
    timeout : float or None
        Seconds to wait to connect, for any data, and for each next 64 KiB: a server slower
        than that is given up on (None: as long as it takes).

    Returns
    -------
    str
        ``dest``.

    Raises
    ------
    InputTypeError
        If ``name`` is not a string. (None is taken with ``mirrors`` and ``checksums`` given.)
    InputError
        If ``name`` has no default mirrors/checksums and none are given.
    DownloadError
        If some file could not be fetched from any mirror; the message lists
        each mirror's failure.
    """
    if name is not None and not isinstance(name, str):     # None: only with mirrors and checksums of one's own
        raise InputTypeError(f"download_dataset: name must be a string such as 'mnist', got {type(name).__name__}")
    if (mirrors is None and name not in MIRRORS) or (checksums is None and name not in MD5):
        raise InputError(f"download_dataset: name must be one of {sorted(MIRRORS)} "
                         f"(or pass mirrors= and checksums=), got {name!r}")
    mirrors = MIRRORS[name] if mirrors is None else _check_names(mirrors, "mirrors", "base URLs")
    if checksums is not None and not isinstance(checksums, Mapping):
        raise InputTypeError(f"checksums must be a dict of file name -> hex MD5, got {type(checksums).__name__}")
    checksums = MD5[name] if checksums is None else {f: _check_md5(m, f"checksums[{f!r}]")
                                                     for f, m in checksums.items()}
    files = list(checksums) if files is None else _check_names(files, "files", "file names")
    for file in files:
        if file != os.path.basename(file) or file in (".", ".."):
            raise InputError(f"files must be plain file names (no folder), got {file!r}")
    if not mirrors:
        raise InputError("download_dataset: mirrors must name at least one base URL, got none")
    timeout = check_timeout(timeout)
    progress = check_bool(progress, "progress")
    dest = check_folder_path(dest, "dest")
    with cleanup_on_sigterm():      # (download_file's own then leaves the cleanup to this one)
        return _download_files(dest, files, mirrors, checksums, progress, timeout)


def _download_files(dest, files, mirrors, checksums, progress, timeout):
    created = _makedirs(dest)
    try:
        for file in files:
            target = os.path.join(dest, file)
            if os.path.exists(target):
                continue
            failures = []
            for i, base in enumerate(mirrors, 1):
                url = base.rstrip("/") + "/" + file
                try:
                    download_file(url, target, checksums.get(file), timeout=timeout, progress=progress)
                    break
                except DownloadError as e:
                    failures.append(str(e))
                    # where a bar is drawn: else it stops, and another starts unexplained
                    if progress and i < len(mirrors) and is_terminal(sys.stderr):
                        emit(sys.stderr, f"mirror {i} of {len(mirrors)} failed: {e}\ntrying the next one\n")
            else:
                tried = "\n".join("  - " + f for f in failures)
                raise DownloadError(f"could not download {file} from any of {len(mirrors)} mirror(s):\n{tried}")
    except BaseException:
        _remove_empty(created)      # a failed download leaves no empty cache folder either
        raise
    return dest
