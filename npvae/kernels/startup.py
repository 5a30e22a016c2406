"""Start Numba without importing all of ``scipy.linalg`` for its BLAS check.

When Numba's CPU target starts (at the first compile or the first load from the
disk cache), it checks that SciPy provides BLAS with ``import
scipy.linalg.cython_blas``. Python imports the package ``scipy.linalg`` before
that one module, and the package's ``__init__`` takes 0.2 s here (most of it
SciPy's array-API layer wrapping every NumPy function): a quarter of a fresh
process's first training step, for a package npvae's kernels never touch (they
call no BLAS from Numba; the products go through NumPy).

:func:`preload_cython_blas` loads that one extension module by itself, under its
own name, before Numba starts, so the check finds it already imported (25 ms
instead of 0.2 s). It is the module SciPy itself would load: Numba's ``np.dot``
and the other linear algebra in jitted code take their BLAS function pointers
from it as usual, and ``import scipy.linalg`` later runs the package as usual
(``scipy.linalg.cython_blas`` is then found in ``sys.modules``). It does nothing
if ``scipy.linalg`` or the Numba target is already loaded, if SciPy is missing,
or if ``NPVAE_PRELOAD_CYTHON_BLAS=0``; any failure leaves Numba to do its own
import. ``tests/test_startup.py`` checks all of this in fresh processes.
"""
import importlib
import importlib.machinery
import importlib.util
import os
import sys

ENV = "NPVAE_PRELOAD_CYTHON_BLAS"
NAME = "scipy.linalg.cython_blas"


def _enabled():
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _extension_path():
    """The file of ``scipy.linalg.cython_blas``, found without importing ``scipy.linalg``."""
    spec = importlib.util.find_spec("scipy")   # locates the package; imports nothing
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "linalg", "cython_blas" + suffix)
            if os.path.isfile(path):
                return path
    return None


def preload_cython_blas():
    """Import ``scipy.linalg.cython_blas`` alone, if that is still to be done; True if it was."""
    if (not _enabled() or NAME in sys.modules or "scipy.linalg" in sys.modules
            or "numba.np.arraymath" in sys.modules):    # Numba's check already ran
        return False
    try:
        path = _extension_path()
        if path is None:
            return False
        importlib.import_module("scipy")   # the parent package first (cheap), as an import would
        spec = importlib.util.spec_from_file_location(NAME, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[NAME]
            raise
        return True
    except Exception:  # noqa: BLE001 - any surprise: Numba imports scipy.linalg itself, as it would anyway
        return False
