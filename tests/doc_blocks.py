"""The Python blocks of the project's pages, as a user copies them."""
import os
import re

from cli_util import ROOT


def python_blocks(page):
    """Every ```python block of ``page`` (a path from the repository's root)."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.S)


def offline_variant(code):
    """What the block's "# offline, ... instead of the two lines above:" comment says: those two
    lines (the download) replaced by the commented ones under it."""
    lines = code.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("# offline"))
    assert "instead of the two lines above" in lines[at]
    assert "load_dataset(" in lines[at - 2] and "ds.train_images" in lines[at - 1]
    rest = [re.sub(r"^#   ", "", line) for line in lines[at + 1:]]
    return "\n".join(lines[:at - 2] + rest) + "\n"
