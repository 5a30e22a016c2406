"""``python -m npvae.fast.compile``: fills Numba's cache; Ctrl-C ends it in one line with 130."""
import errno
import os
import signal
import subprocess
import sys
import time

import numba
import pytest
from cli_util import sigint_as_at_a_terminal

from npvae.fast import compile as compile_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_command_compiles_and_says_so(capsys, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)     # Numba's own places: nothing to warn of
    assert compile_command.main([]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith("npvae: compiling") and "kernels are compiled (or were loaded)" in out[-1]
    # each path as it starts, with the seconds so far: a cold compile is 20-40 s without another word
    assert [line.split(" [")[0] for line in out[1:-1]] == [
        "  (1/4) float32, training with Adam", "  (2/4) float32, training with SGD", "  (3/4) float32, evaluation",
        "  (4/4) float32, a code of one number"]
    assert all(line.endswith(" s]") for line in out[1:-1])
    assert captured.err == ""


@pytest.fixture
def ctrl_c_as_at_a_terminal():
    """Python's own SIGINT handler, whatever this test process was started with: a shell
    script that runs ``pytest &`` starts it with SIGINT ignored, and the compile command
    rightly leaves an ignored Ctrl-C ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("argv, dtypes", [([], ["float32"]), (["--float64"], ["float32", "float64"])])
def test_the_float64_kernels_are_compiled_when_asked(monkeypatch, capsys, argv, dtypes):
    asked = []
    monkeypatch.setattr(compile_command, "compile_kernels", lambda d, say=None: asked.extend(t.__name__ for t in d))
    assert compile_command.main(argv) == 0
    assert asked == dtypes


def test_ctrl_c_in_numbas_compiler_ends_in_one_line_whatever_numba_makes_of_it(monkeypatch, capsys,
                                                                                ctrl_c_as_at_a_terminal):
    """The KeyboardInterrupt may surface from Numba as a RuntimeError (or not at all)."""
    def compile_kernels(dtypes, say=None):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise RuntimeError("no compiled object yet for <Library 'sampler_forward'>") from None
    monkeypatch.setattr(compile_command, "compile_kernels", compile_kernels)
    assert compile_command.main([]) == 130
    assert capsys.readouterr().err == "npvae: compiling stopped (Ctrl-C); run it again to finish\n"

    def swallowed(dtypes, say=None):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
    monkeypatch.setattr(compile_command, "compile_kernels", swallowed)
    assert compile_command.main([]) == 130        # one line, and it does not say "run it again"
    out, err = capsys.readouterr()
    assert "compiled" not in out and err == ("npvae: stopped (Ctrl-C) after compiling had finished anyway: "
                                             "the kernels are in the cache\n")


def test_an_object_the_ctrl_c_left_half_built_is_not_reported_as_it_goes(monkeypatch, capsys,
                                                                          ctrl_c_as_at_a_terminal):
    """A Ctrl-C inside llvmlite's ObjectRef.__init__ leaves one without _as_parameter_, whose
    __del__ then fails (seen once in CI): fallout of the interrupt, not news for the user."""
    class HalfBuilt:
        def __del__(self):
            raise AttributeError("'ModuleRef' object has no attribute '_as_parameter_'")

    def compile_kernels(dtypes, say=None):
        torn = HalfBuilt()
        signal.raise_signal(signal.SIGINT)
        del torn
    monkeypatch.setattr(compile_command, "compile_kernels", compile_kernels)
    reported = []
    hook = reported.append
    monkeypatch.setattr(sys, "unraisablehook", hook)      # what Python would print
    assert compile_command.main([]) == 130
    assert reported == [] and capsys.readouterr().err == "npvae: compiling stopped (Ctrl-C); run it again to finish\n"
    assert sys.unraisablehook is hook       # given back: later failures are printed again


def test_sigterm_ends_it_in_one_line_with_143(monkeypatch, capsys):
    """docker stop, say: the message and status of the other programs, not a silent death."""
    def compile_kernels(dtypes, say=None):
        signal.raise_signal(signal.SIGTERM)
    monkeypatch.setattr(compile_command, "compile_kernels", compile_kernels)
    assert compile_command.main([]) == 143
    assert capsys.readouterr().err == "npvae: compiling stopped (SIGTERM); run it again to finish\n"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL      # given back


def test_a_sigterm_ignored_from_the_start_stays_ignored(monkeypatch, capsys):
    """Started under nohup-like settings (SIGTERM ignored): it is not taken over, nor given back changed."""
    monkeypatch.setattr(compile_command, "compile_kernels", lambda dtypes, say=None: signal.raise_signal(signal.SIGTERM))
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        assert compile_command.main([]) == 0
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert "kernels are compiled" in capsys.readouterr().out


def test_what_it_prints_cannot_stop_it_and_its_usage_errors_are_one_line():
    """Its output is for people: a reader that left (``| head``) or a full disk does not turn into
    a traceback; the kernels still go into the cache."""
    for shell in ('"$0" -m npvae.fast.compile | true', '"$0" -m npvae.fast.compile > /dev/full'):
        proc = subprocess.run(["sh", "-c", shell, sys.executable], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
        assert proc.returncode == 0 and proc.stderr == "", (shell, proc.stderr)
    proc = subprocess.run([sys.executable, "-m", "npvae.fast.compile", "extra"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr == "error: unrecognized arguments: extra (see python -m npvae.fast.compile --help)\n"


def test_other_errors_are_not_taken_for_ctrl_c(monkeypatch):
    def broken(dtypes, say=None):
        raise RuntimeError("a real failure")
    monkeypatch.setattr(compile_command, "compile_kernels", broken)
    with pytest.raises(RuntimeError, match="a real failure"):
        compile_command.main([])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_a_cache_with_no_room_is_one_line_naming_the_cache(monkeypatch, capsys, tmp_path, code):
    """Numba's write of a kernel into a full cache folder (or over ulimit -f) names no file: the
    command says where the cache is, with status 1, where it printed a 30-line traceback."""
    import numba
    def full(dtypes, say=None):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(compile_command, "compile_kernels", full)
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "cache"))    # as NUMBA_CACHE_DIR sets it
    assert compile_command.main([]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith(f"npvae: error: no room to keep the kernels in Numba's cache ({os.strerror(code)}"), err
    assert f"NUMBA_CACHE_DIR={tmp_path / 'cache'}" in err[-1] and "Traceback" not in "".join(err)
    assert "ulimit -f" in err[-1]


def test_another_os_error_while_compiling_is_not_called_no_room(monkeypatch):
    def broken(dtypes, say=None):
        raise IsADirectoryError(errno.EISDIR, "Is a directory")
    monkeypatch.setattr(compile_command, "compile_kernels", broken)
    with pytest.raises(IsADirectoryError):
        compile_command.main([])


def test_ctrl_c_during_a_cold_compile(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "npvae.fast.compile"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_at_a_terminal)        # (under a script's pytest &, too)
    # the clock starts when it says it is compiling: Python's start and the imports take 1 s on
    # an idle 2-core machine and over 2 s on a loaded one (a Ctrl-C there is another case)
    first = proc.stdout.readline()
    time.sleep(2.0)                              # inside the compiler (a cold compile takes ~6 s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert first.startswith("npvae: compiling"), first + err
    assert "Traceback" not in err, err
    # 130, or killed by SIGINT: a KeyboardInterrupt that left an exec() of a string (the imports of
    # NumPy and SciPy that Numba's first compile makes have some) sets CPython's "unhandled Ctrl-C"
    # flag, and ``python -m`` then ends by SIGINT whatever the exit status (a shell shows 130 too)
    ctrl_c = (130, -signal.SIGINT)
    if proc.returncode == 0:                     # finished before the signal (a fast machine)
        assert "compiled" in out
    elif "finished anyway" in err:               # Numba swallowed the interrupt and compiled on
        assert proc.returncode in ctrl_c and err.strip().endswith("the kernels are in the cache"), err
        assert list((tmp_path / "cache").rglob("*.nbi")), "said the kernels are in the cache, but it is empty"
    else:
        assert proc.returncode in ctrl_c and err.strip().endswith("run it again to finish"), err


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, **env})


# Numba's own setting for where it may cache; ZipCacheLocator serves only code inside a zip
# file, so for npvae it is as a read-only install used with no writable home: nowhere to cache.
NOWHERE_TO_CACHE = {"NUMBA_CACHE_LOCATOR_CLASSES": "ZipCacheLocator"}
LOCATORS_SETTABLE = hasattr(numba.config, "CACHE_LOCATOR_CLASSES")   # not in Numba 0.59, the floor
ONE_KERNEL = """
import numpy as np
from npvae.fast import kernels
y, b = np.zeros((3, 2), order="F"), np.array([1.0, 2.0])
kernels.add_bias(y, b)
print(y.tolist())
"""


@pytest.mark.skipif(not LOCATORS_SETTABLE, reason="this Numba does not read NUMBA_CACHE_LOCATOR_CLASSES")
def test_with_nowhere_to_cache_the_kernels_compile_in_the_process_with_a_warning():
    proc = _python(ONE_KERNEL, **NOWHERE_TO_CACHE, NUMBA_CACHE_DIR="/proc/no-such-cache")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([[1.0, 2.0]] * 3)
    assert "UserWarning: Numba finds no writable folder to keep npvae's fast-path kernels in" in proc.stderr
    assert "(NUMBA_CACHE_DIR=/proc/no-such-cache, " in proc.stderr     # the setting that did not do is named
    assert "set NUMBA_CACHE_DIR" in proc.stderr and "Traceback" not in proc.stderr


# the kernels that Python calls (not inlined, nor called only by other kernels, which a load from
# the cache leaves without signatures of their own)
CALLED_FROM_PYTHON = """
import inspect, re, numba
from npvae.fast import kernels
from npvae.fast.compile import compile_kernels
jitted = {n: f for n, f in vars(kernels).items() if isinstance(f, numba.core.registry.CPUDispatcher)
          and f.targetoptions.get("inline") != "always"}
source = {n: inspect.getsource(f.py_func) for n, f in jitted.items()}
outer = {n: f for n, f in jitted.items()
         if not any(re.search(rf"\\b{n}\\(", s) for m, s in source.items() if m != n)}
"""


FIRST_RUNS = """
import numpy as np, npvae
x = np.random.default_rng(0).random((64, 12)).astype(np.float32)
for hidden, latent in ((16, 1), (16, 2), ((16, 8), 5)):       # a code of one number is typed apart
    model = npvae.VAE(12, hidden, latent, rng=0)
    npvae.fit(model, x, x[:32], epochs=2, batch_size=16, progress=False, optimizer=npvae.SGD(model.parameters()))
    npvae.fit(model, x, x[:32], epochs=1, batch_size=16, progress=False)
    npvae.iw_nll(model, x[:8], k=3)
"""


def test_compile_kernels_runs_every_kernel_of_the_fast_path():
    """What it compiles ahead is all that training (Adam with retired units, SGD) and evaluation
    use: no kernel is left to compile in the first run (inlined helpers compile into their callers),
    whatever the model's sizes."""
    proc = _python(CALLED_FROM_PYTHON + "compile_kernels()\n"
                   "print(sorted(n for n in outer if not outer[n].signatures))\n"
                   "ahead = {n: len(f.signatures) for n, f in jitted.items()}\n" + FIRST_RUNS +
                   "print(sorted(n for n, f in jitted.items() if len(f.signatures) > ahead[n]))\n")
    assert proc.returncode == 0 and proc.stdout.split("\n")[:2] == ["[]", "[]"], proc.stdout + proc.stderr


def test_the_fast_path_run_as_plain_python_says_so_once():
    """NUMBA_DISABLE_JIT (for coverage) makes training many times slower: not a silent mystery."""
    proc = _python("import warnings, numpy as np, npvae\n"
                   "x = np.random.default_rng(0).random((40, 6))\n"
                   "npvae.fit(npvae.VAE(6, 4, 2, rng=0), x, x, epochs=2, batch_size=20, progress=False)\n",
                   NUMBA_DISABLE_JIT="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("UserWarning: NUMBA_DISABLE_JIT is set: the fast path's kernels run as plain "
                             "Python") == 1, proc.stderr


def test_the_command_says_when_there_is_nothing_to_keep_or_to_compile():
    if LOCATORS_SETTABLE:
        nowhere = _python("from npvae.fast.compile import main; raise SystemExit(main([]))", **NOWHERE_TO_CACHE)
        assert nowhere.returncode == 1 and "Traceback" not in nowhere.stderr
        assert "npvae: error: Numba finds no folder to keep the kernels in" in nowhere.stderr
        assert "compiled" not in nowhere.stdout
    no_jit = _python("from npvae.fast.compile import main; raise SystemExit(main([]))", NUMBA_DISABLE_JIT="1")
    assert no_jit.returncode == 0 and no_jit.stdout == ""
    assert "nothing to compile: NUMBA_DISABLE_JIT is set" in no_jit.stderr


@pytest.mark.parametrize("given, words", [
    ("/proc/no-such-cache", "NUMBA_CACHE_DIR='/proc/no-such-cache' cannot be written"),
    ("cache", "NUMBA_CACHE_DIR='cache' is relative: the kernels go into {tmp}/cache, where a run started "
              "from another folder will not look; give a full path"),
    ("/sys", "NUMBA_CACHE_DIR='/sys' cannot be written"),        # a folder that exists; not even root writes there
])
def test_a_numba_cache_dir_later_runs_would_not_find_is_named_before_compiling(tmp_path, given, words):
    """Numba passes over a folder it cannot write to, and takes a relative one from the current
    folder: "compiled into Numba's cache" alone would hide that the cache is elsewhere, or nowhere."""
    env = {**os.environ, "NUMBA_CACHE_DIR": given, "PYTHONPATH": ROOT}
    proc = subprocess.Popen([sys.executable, "-m", "npvae.fast.compile"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()              # said before the compiling starts: no need to wait for it
    proc.terminate()
    proc.communicate(timeout=120)
    assert first.startswith("npvae: warning: " + words.format(tmp=tmp_path)), first


def test_the_cache_numba_falls_back_to_is_named_as_numba_names_it_on_each_system(monkeypatch):
    """Messages name the folder Numba would really use: XDG_CACHE_HOME on Linux, not always ~/.cache."""
    from npvae.fast.kernels import cache_places, user_cache
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert user_cache() == "/somewhere/cache/numba" and cache_places().endswith(", /somewhere/cache/numba")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache() == "~/.cache/numba"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert user_cache() == "~/Library/Caches/numba"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(os, "name", "nt")
    assert user_cache() == r"%LOCALAPPDATA%\numba\Cache"
