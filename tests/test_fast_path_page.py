"""docs/fast-path.md's Python blocks run as a user would copy them, one after the other.

Only the data change: ``load_dataset("mnist")`` gives 800 of the shipped 1,000 test digits to
train on (the full MNIST is not on the test machines) and the other 200 to test on.
"""
import numpy as np

import npvae
import npvae.data
from npvae.data import Dataset, load_split, split
from cli_util import SAMPLE
from doc_blocks import offline_variant, python_blocks


def test_the_blocks_train_on_the_fast_path_and_leave_the_result_in_the_model(monkeypatch, capsys):
    (train, train_labels), (test, test_labels) = split(*load_split("mnist", "t10k", data_dir=SAMPLE), 800)
    monkeypatch.setattr(npvae.data, "load_dataset",
                        lambda name: Dataset(name, train, train_labels, test, test_labels, SAMPLE))
    blocks = python_blocks("docs/fast-path.md")
    assert len(blocks) == 2, "the page's loop, then its loop with dead-unit retirement"
    names = {}
    exec(compile(blocks[0], "docs/fast-path.md", "exec"), names)
    model, opt = names["model"], names["opt"]
    assert opt.t == 2 * 7 and opt.lr == 5e-4          # 800 images in batches of 128, two epochs
    first_epoch, second_epoch = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines()]
    assert second_epoch < first_epoch < 600
    assert np.isclose(npvae.evaluate_elbo(model, test).total, second_epoch)   # what it printed is the model's

    # the second block, on a model with 50 first-layer units off for every image: they go
    model = npvae.VAE(784, 400, 20, rng=1)
    model.encoder[0].bias.data[:50] = -30.0
    names.update(model=model, opt=npvae.Adam(model.parameters(), lr=1e-3))
    exec(compile(blocks[1], "docs/fast-path.md", "exec"), names)
    assert names["opt"].t == 2 * 7 and np.isfinite(names["parts"].total)
    retired = names["trainer"].dead_units()["retired"]
    assert set(range(50)) <= set(retired) and len(retired) < 400
    assert capsys.readouterr().out == f"{len(retired)} units retired\n"


def test_its_offline_variant_runs_on_the_mnist_test_files_alone(monkeypatch, capsys):
    """The commented lines replace the two above them, as in the README; the loop then trains on those."""
    def no_network(name):
        raise AssertionError("offline, the block must not call load_dataset")

    monkeypatch.setattr(npvae.data, "load_dataset", no_network)
    offline = offline_variant(python_blocks("docs/fast-path.md")[0])
    assert offline.count("load_split(") == 1 and "ds." not in offline
    offline = offline.replace("data_dir=DIR", f"data_dir={SAMPLE!r}").replace(", 8000)", ", 800)")
    names = {}
    exec(compile(offline, "docs/fast-path.md", "exec"), names)
    assert len(names["train_images"]) == 800 and names["opt"].t == 2 * 7
    assert len(capsys.readouterr().out.splitlines()) == 2
