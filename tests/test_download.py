"""Tests of npvae.data.download against a real HTTP server on 127.0.0.1.

The server (http.server in a thread, on a free port) serves small fake IDX
.gz files; the tests pass their own mirror URLs and MD5s, so nothing here
touches the internet.
"""
import contextlib
import errno
import gzip
import hashlib
import http.server
import io
import os
import socket
import struct
import sys
import threading
import time

import numpy as np
import pytest

from npvae.data import download
from npvae.data import SYSTEM_DIRS, download_dataset, download_file, load_dataset, load_idx_folder
from npvae.errors import DatasetNotFoundError, DownloadError, InputError, InputTypeError

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def idx_gz(arr):
    arr = np.asarray(arr, np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.tobytes(), mtime=0)


def fake_files(n_train=6, n_test=4):
    """File name -> .gz bytes of a tiny, valid data set (28x28 images)."""
    rng = np.random.default_rng(0)
    return {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, n_train)),
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_gz(rng.integers(0, 10, n_test)),
    }


FILES = fake_files()
MD5S = {name: hashlib.md5(data).hexdigest() for name, data in FILES.items()}
BIG = idx_gz(np.random.default_rng(1).integers(0, 256, (400, 28, 28)))    # 314 kB: five reads of 64 kB


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<mode>/<file>``: good (the file), drop (half, then hang up),
    slow (headers, then silence), drip (100 bytes every 0.05 s), html (an error page with status 200), portal (the
    same, said to be text/html, as a network's sign-in page is), trickle (a
    bigger file, ``BIG``, in eight parts 0.06 s apart), moved (a redirect to ``/missing/<file>``);
    anything else is 404 (also a proxy's request, whose path is a whole URL).
    ``server.hits`` counts requests per path."""

    def do_GET(self):
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        _, mode, name = (self.path.split("/", 2) + ["", ""])[:3]
        data = FILES.get(name)
        if mode == "moved":
            self.send_response(301)
            self.send_header("Location", f"/missing/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if data is None or mode not in ("good", "drop", "slow", "html", "portal", "trickle", "drip"):
            self.send_error(404)
            return
        if mode in ("html", "portal"):
            data = b"<html>Moved</html>"
        if mode == "trickle":
            data = BIG
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        if mode == "portal":
            self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        if mode == "slow":
            time.sleep(1.0)
            return
        if mode == "drip":           # alive, but 2 kB/s: a whole file would take minutes
            with contextlib.suppress(OSError):
                for i in range(0, 6000, 100):
                    self.wfile.write(data[i:i + 100])
                    self.wfile.flush()
                    time.sleep(0.05)
            return
        if mode == "trickle":
            part = -(-len(BIG) // 8)
            for i in range(0, len(BIG), part):
                self.wfile.write(BIG[i:i + part])
                self.wfile.flush()
                time.sleep(0.06)
            return
        # "drop": promise everything, send half, close the connection.
        self.wfile.write(data[:len(data) // 2] if mode == "drop" else data)
        self.wfile.flush()

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.hits = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port nobody listens on (connection refused)."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/good/"


def test_download_success(tmp_path, server):
    dest = tmp_path / "cache" / "mnist"
    assert download_dataset("mnist", dest, mirrors=[server.url + "/good/"], checksums=MD5S,
                            progress=False) == str(dest)
    assert sorted(os.listdir(dest)) == sorted(FILES)  # no temporary file left
    for name, data in FILES.items():
        assert (dest / name).read_bytes() == data
    ds = load_idx_folder(dest)
    assert ds.train_images.shape == (6, 784) and ds.test_images.shape == (4, 784)


def test_files_already_there_are_not_downloaded_again(tmp_path, server):
    dest = tmp_path / "d"
    download_dataset("mnist", dest, mirrors=[server.url + "/good"], checksums=MD5S, progress=False)
    hits = dict(server.hits)
    download_dataset("mnist", dest, mirrors=[server.url + "/good"], checksums=MD5S, progress=False)
    assert server.hits == hits


def test_checksum_mismatch_leaves_nothing(tmp_path, server):
    dest = tmp_path / "d"
    wrong = dict(MD5S, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(DownloadError, match="checksum mismatch") as info:
        download_dataset("mnist", dest, files=["train-images-idx3-ubyte.gz"],
                         mirrors=[server.url + "/good/"], checksums=wrong, progress=False)
    assert "0" * 32 in str(info.value) and MD5S["train-images-idx3-ubyte.gz"] in str(info.value)
    size = len(FILES["train-images-idx3-ubyte.gz"])
    assert f"a gzip file of {size} bytes arrived: another version of the file" in str(info.value)
    assert not dest.exists()  # not even a hidden temporary file, nor the folder it made


def test_a_checksum_mismatch_says_what_arrived(tmp_path, server):
    """A web page sent as data, and a file of another version, gave the same two md5s and nothing else."""
    name = "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError, match=r"checksum mismatch: .*; the server sent a web page of 18 bytes, "
                                            r"not the file"):
        download_file(f"{server.url}/html/{name}", tmp_path / name, md5=MD5S[name])
    assert os.listdir(tmp_path) == []


def test_an_http_error_through_a_proxy_names_the_proxy(tmp_path, server, monkeypatch):
    """The 404 (or a corporate proxy's 403) came from the proxy, not from the mirror."""
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DownloadError, match=rf"HTTP 404 .* \(through the proxy {server.url}, from \$http_proxy\)"):
        download_file("http://mirror.example/good/t10k-labels-idx1-ubyte.gz", tmp_path / "l.gz", progress=False)


def test_an_http_error_after_a_redirect_names_where_it_came_from(tmp_path, server):
    name = "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError, match=rf"/moved/{name} \(redirected to {server.url}/missing/{name}\): "
                                            rf"HTTP 404"):
        download_file(f"{server.url}/moved/{name}", tmp_path / name, progress=False)


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_a_mirror_given_up_on_is_said_before_the_next_is_tried(tmp_path, server, monkeypatch):
    """A bar stopped part-way, and another began for the same file, with no word of why."""
    monkeypatch.setattr(sys, "stderr", Terminal())
    name = "t10k-labels-idx1-ubyte.gz"
    download_dataset("mnist", tmp_path, files=[name], mirrors=[server.url + "/missing/", server.url + "/good/"],
                     checksums=MD5S)
    assert f"mirror 1 of 2 failed: {server.url}/missing/{name}: HTTP 404" in sys.stderr.getvalue()
    assert "trying the next one" in sys.stderr.getvalue()


def test_connection_dropped_mid_file_leaves_nothing(tmp_path, server):
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match="dropped after") as info:
        download_file(server.url + "/drop/t10k-images-idx3-ubyte.gz", dest / "t10k-images-idx3-ubyte.gz",
                      md5=MD5S["t10k-images-idx3-ubyte.gz"])
    assert "/drop/t10k-images-idx3-ubyte.gz" in str(info.value)
    assert not dest.exists()


def test_timeout_leaves_nothing(tmp_path, server):
    dest = tmp_path / "d"
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match="/slow/"):
        download_file(server.url + "/slow/t10k-labels-idx1-ubyte.gz", dest / "x.gz", timeout=0.2)
    assert time.perf_counter() - t0 < 0.9
    assert not dest.exists()


def test_a_web_page_in_place_of_the_file_is_said_as_such(tmp_path, server):
    """A captive portal answers 200 with its sign-in page: not "checksum mismatch", and no
    advice to try again "when online" without saying why."""
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match=r"/portal/t10k-labels-idx1-ubyte.gz: the server sent a web page "
                                            r"\(text/html\), not the file"):
        download_file(server.url + "/portal/t10k-labels-idx1-ubyte.gz", dest / "l.gz",
                      md5=MD5S["t10k-labels-idx1-ubyte.gz"])
    assert not dest.exists()


def test_without_md5_the_file_must_parse_as_idx(tmp_path, server):
    dest = tmp_path / "d"
    with pytest.raises(DownloadError, match="not a valid IDX file") as info:
        download_file(server.url + "/html/t10k-labels-idx1-ubyte.gz", dest / "l.gz", md5=None)
    assert str(dest / "l.gz") + ":" in str(info.value) and ".part" not in str(info.value)
    assert not dest.exists()
    download_file(server.url + "/good/t10k-labels-idx1-ubyte.gz", dest / "l.gz", md5=None)
    assert os.listdir(dest) == ["l.gz"]


def test_fallback_to_second_mirror(tmp_path, server, dead_url):
    dest = tmp_path / "d"
    mirrors = [dead_url, server.url + "/missing/", server.url + "/drop/", server.url + "/good/"]
    download_dataset("fashion-mnist", dest, mirrors=mirrors, checksums=MD5S, progress=False)
    assert sorted(os.listdir(dest)) == sorted(FILES)
    assert server.hits["/good/train-images-idx3-ubyte.gz"] == 1
    assert server.hits["/missing/train-images-idx3-ubyte.gz"] == 1


def test_all_mirrors_fail_lists_each(tmp_path, server, dead_url):
    dest = tmp_path / "d"
    mirrors = [dead_url, server.url + "/missing/", server.url + "/drop/"]
    with pytest.raises(DownloadError) as info:
        download_dataset("mnist", dest, mirrors=mirrors, checksums=MD5S, progress=False)
    msg = str(info.value)
    assert "train-images-idx3-ubyte.gz" in msg and "3 mirror(s)" in msg
    assert "cannot connect" in msg and "HTTP 404" in msg and "dropped after" in msg
    assert not dest.exists()


def test_a_server_that_drips_is_given_up_on(tmp_path, server):
    """Each read of a few bytes comes within the timeout, so the socket's own timeout never fires:
    the download must still end, not hang for days."""
    dest = tmp_path / "cache"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=r"drip/t10k-images-idx3-ubyte.gz: too slow: \d+ bytes in the last "
                                            r"0.5 s.*giving up"):
        download_file(server.url + "/drip/t10k-images-idx3-ubyte.gz", dest / "x.gz", timeout=0.5)
    assert time.monotonic() - start < 1.0          # given up on after the timeout, not twice it
    assert not dest.exists()


def test_a_fast_download_may_take_longer_than_the_timeout(tmp_path, server):
    """The timeout bounds the wait for each 64 KiB, not the whole download (0.48 s here)."""
    download_file(server.url + "/trickle/t10k-images-idx3-ubyte.gz", tmp_path / "i.gz", timeout=0.3)
    assert (tmp_path / "i.gz").read_bytes() == BIG


def test_a_refused_connection_through_a_proxy_names_the_proxy(tmp_path, dead_url, monkeypatch):
    """The host that refused is the proxy, not the mirror."""
    proxy = dead_url.rsplit("/good/", 1)[0]
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(DownloadError, match=rf"cannot connect: .* \(through the proxy {proxy}, "
                                            rf"from \$http_proxy\)"):
        download_file("http://example.invalid/x.gz", tmp_path / "x.gz", timeout=5)
    monkeypatch.setenv("http_proxy", proxy.replace("http://", "http://alice:s3cret@"))
    with pytest.raises(DownloadError, match=rf"through the proxy {proxy}, from") as e:
        download_file("http://example.invalid/x.gz", tmp_path / "x.gz", timeout=5)
    assert "s3cret" not in str(e.value) and "alice" not in str(e.value)
    monkeypatch.setenv("http_proxy", proxy.replace("http://", "http://T0KEN@"))     # a token as the user name
    with pytest.raises(DownloadError, match=rf"through the proxy {proxy}, from") as e:
        download_file("http://example.invalid/x.gz", tmp_path / "x.gz", timeout=5)
    assert "T0KEN" not in str(e.value)
    monkeypatch.setenv("no_proxy", "example.invalid")        # not through the proxy: no note
    with pytest.raises(DownloadError) as e:
        download_file("http://example.invalid/x.gz", tmp_path / "x.gz", timeout=5)
    assert "proxy" not in str(e.value)


def test_a_malformed_mirror_is_one_failure_among_the_mirrors(tmp_path, server):
    dest = tmp_path / "cache"
    download_dataset("mnist", dest, files=["t10k-labels-idx1-ubyte.gz"], checksums=MD5S, progress=False,
                     mirrors=["http://[::1/", server.url + "/good/"])
    assert os.listdir(dest) == ["t10k-labels-idx1-ubyte.gz"]


def fresh_machine(monkeypatch, tmp_path, name, *mirrors):
    """``load_dataset(name)`` as on a machine with no copy of the data: no $NPVAE_DATA_DIR, no
    system folder, the user cache in ``tmp_path/xdg``, downloads from ``mirrors`` (with the test
    files' checksums for MNIST); the cache folder."""
    monkeypatch.delenv("NPVAE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(SYSTEM_DIRS, name, ())
    monkeypatch.setitem(download.MIRRORS, name, mirrors)
    if name == "mnist":
        monkeypatch.setitem(download.MD5, "mnist", MD5S)
    return tmp_path / "xdg" / "npvae" / name


def test_load_dataset_downloads_into_the_cache(tmp_path, server, monkeypatch, capsys):
    cache = fresh_machine(monkeypatch, tmp_path, "mnist", server.url + "/missing/", server.url + "/good/")
    ds = load_dataset("mnist")  # progress=True, but stderr is not a terminal here
    assert ds.source == str(cache) and ds.train_images.shape == (6, 784)
    assert sorted(os.listdir(cache)) == sorted(FILES)
    assert capsys.readouterr().err == ""


def test_only_the_missing_files_are_downloaded_into_the_cache(tmp_path, server, monkeypatch):
    """The test files already in the cache, uncompressed: only the training files are fetched."""
    cache = fresh_machine(monkeypatch, tmp_path, "mnist", server.url + "/good/")
    cache.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (cache / name[:-3]).write_bytes(gzip.decompress(FILES[name]))
    assert load_dataset("mnist", progress=False).test_images.shape == (4, 784)
    assert sorted(server.hits) == ["/good/train-images-idx3-ubyte.gz", "/good/train-labels-idx1-ubyte.gz"]


def test_a_download_in_place_of_a_mistyped_environment_variable_is_said(tmp_path, server, monkeypatch):
    monkeypatch.setenv("NPVAE_DATA_DIR", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(SYSTEM_DIRS, "mnist", ())
    monkeypatch.setitem(download.MIRRORS, "mnist", (server.url + "/good/",))
    monkeypatch.setitem(download.MD5, "mnist", MD5S)
    with pytest.warns(UserWarning, match=r"no-such-folder: folder does not exist; downloaded mnist into .*xdg"):
        load_dataset("mnist", progress=False)


def test_load_dataset_reports_failed_download(tmp_path, server, monkeypatch):
    fresh_machine(monkeypatch, tmp_path, "fashion-mnist", server.url + "/missing/")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fmnist", progress=False)
    msg = str(info.value)
    assert "Downloading failed" in msg and "HTTP 404" in msg
    assert str(tmp_path / "xdg" / "npvae" / "fashion-mnist") in msg
    assert isinstance(info.value.__cause__, DownloadError)
    assert not (tmp_path / "xdg").exists()       # no empty cache folder left behind


def test_load_dataset_passes_its_timeout_to_the_download(tmp_path, server, monkeypatch):
    """A user on a slow network sets the timeout where they load, not only in download_dataset."""
    fresh_machine(monkeypatch, tmp_path, "mnist", server.url + "/slow/")
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError, match="/slow/"):
        load_dataset("mnist", progress=False, timeout=0.2)
    assert time.monotonic() - start < 0.9       # the server's silence lasts 1 s a file


def test_a_bad_timeout_is_refused_even_when_nothing_downloads(tmp_path):
    from npvae.data import load_split, locate
    for value in (0, "30"):
        for call in (load_dataset, lambda *a, **k: load_split(*a, "t10k", **k), locate):
            with pytest.raises((InputError, InputTypeError), match="timeout"):
                call("mnist", data_dir=tmp_path, timeout=value)


@pytest.mark.parametrize("given", [{}, {"mirrors": ["http://127.0.0.1:9/"]}, {"checksums": {}}])
def test_unknown_name_without_tables(tmp_path, given):
    with pytest.raises(InputError, match=r"mnist.*\(or pass mirrors= and checksums=\), got 'cifar'"):
        download_dataset("cifar", tmp_path, **given)


def test_default_tables_are_complete():
    for name in ("mnist", "fashion-mnist"):
        assert download.MIRRORS[name]
        assert sorted(download.MD5[name]) == sorted(s + ".gz" for s in STEMS)
        assert all(len(h) == 32 for h in download.MD5[name].values())


@pytest.mark.parametrize("source", ["good", "trickle"])
def test_progress_line_on_a_terminal_ends_at_the_whole_file(tmp_path, server, monkeypatch, source):
    """One piece ("good") or many ("trickle"): the last redraw shows the whole file, not its last piece."""
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    fake = Terminal()
    monkeypatch.setattr(sys, "stderr", fake)
    download_file(f"{server.url}/{source}/t10k-images-idx3-ubyte.gz", tmp_path / "i.gz", progress=True)
    out = fake.getvalue()
    assert out.startswith("\rdownloading i.gz [") and "MB/s" in out and out.endswith("\n")
    last = out.rstrip("\n").rsplit("\r", 1)[-1]
    assert " 100% " in last, last
    if source == "trickle":
        assert " 100%  0.3/0.3 MB" in last, last


@pytest.mark.parametrize("progress", [True, False])
def test_download_dataset_shows_progress_as_asked(tmp_path, server, monkeypatch, capsys, progress):
    monkeypatch.setattr(download, "LOG_EVERY", 0.05)
    name = "t10k-images-idx3-ubyte.gz"
    download_dataset("mnist", tmp_path, files=[name], mirrors=[server.url + "/trickle/"],
                     checksums={name: hashlib.md5(BIG).hexdigest()}, progress=progress)
    lines = capsys.readouterr().err.splitlines()
    assert (len(lines) >= 2 and all(line.startswith(f"downloading {name} [") for line in lines)) if progress \
        else lines == []


def test_a_slow_download_off_a_terminal_prints_a_line_now_and_then(tmp_path, server, monkeypatch, capsys):
    """In a log (CI, nohup) a slow first download is not minutes of silence: a plain line
    every LOG_EVERY seconds (10; here 0.05), with the rate."""
    monkeypatch.setattr(download, "LOG_EVERY", 0.05)
    download_file(server.url + "/trickle/t10k-images-idx3-ubyte.gz", tmp_path / "i.gz", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) >= 2 and all(line.startswith("downloading i.gz [") and "MB/s" in line for line in lines)
    assert "\r" not in "".join(lines)
    download_file(server.url + "/trickle/t10k-images-idx3-ubyte.gz", tmp_path / "j.gz", progress=False)
    assert capsys.readouterr().err == ""


def test_a_downloaded_file_gets_the_usual_mode_not_0600(tmp_path, server):
    old = os.umask(0o022)
    try:
        download_dataset("mnist", tmp_path, files=["t10k-labels-idx1-ubyte.gz"],
                         mirrors=[server.url + "/good/"], checksums=MD5S, progress=False)
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "t10k-labels-idx1-ubyte.gz").st_mode & 0o777 == 0o644


@pytest.mark.parametrize("kwargs, error, match", [
    ({"mirrors": "http://x/"}, InputTypeError, r"mirrors must be a list of base URLs, got str .*write \["),
    ({"files": "t10k-labels-idx1-ubyte.gz"}, InputTypeError, "files must be a list of file names"),
    ({"files": ["../escaped.gz"]}, InputError, "plain file names"),
    ({"files": [".."]}, InputError, "plain file names"),
    ({"files": [""]}, InputError, "files must be a list of file names, got an item ''"),
    ({"mirrors": [""]}, InputError, "mirrors must be a list of base URLs, got an item ''"),
    ({"mirrors": []}, InputError, "mirrors must name at least one base URL"),
    ({"checksums": {"a.gz": b"0" * 32}}, InputTypeError, r"checksums\['a.gz'\] must be a hex MD5"),
    ({"timeout": -1}, InputError, "timeout must be a finite number > 0"),
    ({"timeout": "abc"}, InputTypeError, "timeout must be a number"),
])
def test_download_dataset_refuses_bad_arguments_before_any_request(tmp_path, server, kwargs, error, match):
    kwargs = {"mirrors": [server.url + "/good/"], "checksums": MD5S, **kwargs}
    with pytest.raises(error, match=match):
        download_dataset("mnist", tmp_path / "d", progress=False, **kwargs)
    assert server.hits == {} and not (tmp_path / "d").exists()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"dest": None}, InputTypeError, "dest must be the file path"),
    ({"md5": b"0" * 32}, InputTypeError, "md5 must be a hex MD5 digest"),
    ({"md5": "xyz"}, InputError, "32 hex digits"),
    ({"md5": "0" * 32 + "\n"}, InputError, "32 hex digits"),         # read from a file, newline and all
    ({"timeout": 0}, InputError, "timeout"),
    ({"url": None}, InputTypeError, "url must be a URL string"),
])
def test_download_file_refuses_bad_arguments(tmp_path, server, kwargs, error, match):
    kwargs = {"url": server.url + "/good/t10k-labels-idx1-ubyte.gz", "dest": tmp_path / "f.gz", **kwargs}
    with pytest.raises(error, match=match):
        download_file(**kwargs)
    assert server.hits == {}


def test_files_mirrors_and_checksums_may_be_any_iterable_or_mapping(tmp_path, server):
    import types
    name = "t10k-labels-idx1-ubyte.gz"
    download_dataset("mnist", tmp_path, files=(f for f in [name]), mirrors={server.url + "/good/"},
                     checksums=types.MappingProxyType(MD5S), progress=False, timeout=None)
    assert (tmp_path / name).read_bytes() == FILES[name]


def test_a_file_without_a_checksum_is_checked_as_idx(tmp_path, server):
    name = "t10k-labels-idx1-ubyte.gz"
    download_dataset("mnist", tmp_path, files=[name], mirrors=[server.url + "/good/"], checksums={}, progress=False)
    assert (tmp_path / name).read_bytes() == FILES[name]
    with pytest.raises(DownloadError, match="not a valid IDX file"):
        download_dataset("mnist", tmp_path / "d", files=[name], mirrors=[server.url + "/html/"], checksums={},
                         progress=False)


def test_an_upper_case_md5_is_accepted(tmp_path, server):
    name = "t10k-labels-idx1-ubyte.gz"
    download_file(f"{server.url}/good/{name}", tmp_path / name, md5=MD5S[name].upper())
    assert (tmp_path / name).read_bytes() == FILES[name]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_named_as_the_file_asked_for(tmp_path, server):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError) as info:
            download_file(server.url + "/good/t10k-labels-idx1-ubyte.gz", folder / "l.gz")
    finally:
        folder.chmod(0o755)
    assert info.value.filename == str(folder / "l.gz")


@pytest.mark.parametrize("part, age, swept", [
    (".x.gz.abcd_123.part", 11 * 60, True),        # a killed download's, untouched for 11 minutes
    (".x.gz.abcd_123.part", 60, False),            # another process's, downloading now
    (".y.gz.abcd_123.part", 11 * 60, False),       # another file's
])
def test_a_killed_downloads_partial_file_is_swept_and_a_live_one_kept(tmp_path, server, part, age, swept):
    (tmp_path / part).write_bytes(b"half")
    os.utime(tmp_path / part, (time.time() - age, time.time() - age))
    download_file(server.url + "/good/t10k-labels-idx1-ubyte.gz", tmp_path / "x.gz")
    assert sorted(os.listdir(tmp_path)) == (["x.gz"] if swept else sorted(["x.gz", part]))


class _FullDisk:
    """A file whose writes fail as on a full disk (an error that names no file)."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("fails", ["write", "fsync"])
def test_a_full_disk_is_an_oserror_naming_the_file_and_no_other_mirror_is_tried(tmp_path, server, monkeypatch, fails):
    if fails == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(download.os, "fdopen", lambda fd, mode: _FullDisk(real_fdopen(fd, mode)))
    else:
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(download.os, "fsync", fsync)
    name = "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(OSError) as info:
        download_dataset("mnist", tmp_path / "d", files=[name], checksums=MD5S, progress=False,
                         mirrors=[server.url + "/good/", server.url + "/trickle/"])
    assert not isinstance(info.value, DownloadError) and info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "d" / name)
    assert list(server.hits) == [f"/good/{name}"] and not (tmp_path / "d").exists()


def test_a_partial_file_removed_under_a_download_is_said(tmp_path, server, monkeypatch):
    """A download stopped (Ctrl-Z) for over 10 minutes: another process sweeps its partial file
    as a killed download's. The message says that, not that the folder cannot be written."""
    real_fsync = os.fsync

    def fsync_then_swept(fd):           # the other process removes the partial file at this one's last step
        real_fsync(fd)
        for part in tmp_path.glob(".x.gz.*.part"):
            part.unlink()

    monkeypatch.setattr(download.os, "fsync", fsync_then_swept)
    for md5 in (None, MD5S["t10k-labels-idx1-ubyte.gz"]):         # read back as IDX, or checked by MD5
        with pytest.raises(DownloadError, match=r"the partial file .*x.gz.*\.part was removed before it was "
                                                r"complete: another npvae process takes one untouched for 10 minutes"):
            download_file(server.url + "/good/t10k-labels-idx1-ubyte.gz", tmp_path / "x.gz", md5=md5)
        assert os.listdir(tmp_path) == []


def test_download_dataset_names_a_name_that_is_not_a_string(tmp_path):
    with pytest.raises(InputTypeError, match=r"^download_dataset: name must be a string such as 'mnist', got list$"):
        download_dataset(["mnist"], tmp_path)


def test_a_proxy_set_after_a_first_download_is_used(tmp_path, server, monkeypatch):
    """In a notebook, after a try that failed for want of it: urlopen's opener, made at its first
    call, would not use it (and the message would name a proxy that was not used)."""
    download_file(f"{server.url}/good/t10k-labels-idx1-ubyte.gz", tmp_path / "a.gz", progress=False)
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    server.hits.clear()
    with pytest.raises(DownloadError, match=r"HTTP 404"):     # the proxy (the test server) had it
        download_file("http://mirror.example/good/t10k-labels-idx1-ubyte.gz", tmp_path / "b.gz", progress=False)
    assert list(server.hits) == ["http://mirror.example/good/t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("body, says", [(b"<HTML><BODY>Sign in</BODY></HTML>", "the server sent a web page of 33 bytes"),
                                        (b"", r"the server sent nothing \(an empty body\)")])
def test_a_checksum_mismatch_names_a_page_in_capitals_and_an_empty_body(tmp_path, body, says):
    page = tmp_path / "served.gz"
    page.write_bytes(body)
    with pytest.raises(DownloadError, match=rf"checksum mismatch: .*; {says}"):
        download_file(page.as_uri(), tmp_path / "d" / "l.gz", md5="0" * 32, progress=False)


def test_a_mirror_is_said_given_up_on_only_where_a_bar_is_drawn_and_another_is_next(tmp_path, server, monkeypatch):
    name = "t10k-labels-idx1-ubyte.gz"
    mirrors = [server.url + "/missing/", server.url + "/good/"]
    monkeypatch.setattr(sys, "stderr", Terminal())
    download_dataset("mnist", tmp_path / "a", files=[name], mirrors=mirrors, checksums=MD5S, progress=False)
    assert "failed" not in sys.stderr.getvalue()                           # no progress asked for
    with pytest.raises(DownloadError):
        download_dataset("mnist", tmp_path / "b", files=[name], mirrors=[server.url + "/missing/"] * 2,
                         checksums=MD5S)
    assert "mirror 1 of 2 failed" in sys.stderr.getvalue() and "mirror 2 of 2" not in sys.stderr.getvalue()
    monkeypatch.setattr(sys, "stderr", io.StringIO())                      # a log: no bar, no note
    download_dataset("mnist", tmp_path / "c", files=[name], mirrors=mirrors, checksums=MD5S)
    assert sys.stderr.getvalue() == ""
