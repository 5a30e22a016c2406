"""The README's Python block runs as a user would copy it: as written, and with its offline variant.

Only the data and the number of epochs change: ``load_dataset("mnist")`` gives the shipped
1,000 test digits (the full MNIST is not on the test machines), and ``epochs=10`` becomes 1.
"""
import os
import re

import numpy as np

import npvae
import npvae.data
from npvae.data import Dataset, load_split, split
from doc_blocks import offline_variant, python_blocks

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SAMPLE = os.path.join(ROOT, "tests", "data", "mnist-sample")


def python_block():
    blocks = python_blocks("README.md")
    assert len(blocks) == 1, "the README's one Python block"
    assert "epochs=10" in blocks[0]
    return blocks[0].replace("epochs=10", "epochs=1")


def run(code):
    names = {}
    exec(compile(code, "README.md", "exec"), names)
    assert isinstance(names["parts"], npvae.LossParts) and np.isfinite(names["parts"].total)
    assert names["images"].shape == (64, 784) and names["images"].dtype == np.float32
    assert len(names["history"]) == 1
    return names


def test_the_readme_python_block_runs_as_written(monkeypatch):
    (train, train_labels), (test, test_labels) = split(*load_split("mnist", "t10k", data_dir=SAMPLE), 800)
    monkeypatch.setattr(npvae.data, "load_dataset",
                        lambda name: Dataset(name, train, train_labels, test, test_labels, SAMPLE))
    names = run(python_block())
    assert names["x"].shape == (128, 784)


def test_its_offline_variant_runs_with_no_download(monkeypatch):
    """The commented lines replace the two above them; the block then trains on those."""
    def no_network(name):
        raise AssertionError("offline, the block must not call load_dataset")

    monkeypatch.setattr(npvae.data, "load_dataset", no_network)
    offline = offline_variant(python_block())
    assert offline.count("load_split(") == 1 and "ds." not in offline
    offline = offline.replace("data_dir=DIR", f"data_dir={SAMPLE!r}").replace(", 8000)", ", 800)")
    names = run(offline)
    assert len(names["train_images"]) == 800 and len(names["test_images"]) == 200


def test_the_readme_is_short_and_every_file_it_links_exists():
    """A learner's page: at most 200 lines, the details one link away."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)|src=\"([^\"]+)\"", text)
    paths = [a or b for a, b in links if not (a or b).startswith("http")]
    assert "docs/fast-path.md" in paths and "docs/derivation.md" in paths
    missing = [p for p in paths if not os.path.exists(os.path.join(ROOT, p))]
    assert missing == []
