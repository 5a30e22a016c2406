"""Tests of npvae.plots: every figure is a valid PNG of a sensible size, drawn without pyplot."""
import os
import pickle
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
from matplotlib.figure import Figure

from npvae import VAE
from npvae.data import load_idx_split
from npvae.errors import InputError, InputTypeError
from npvae.plots import (latent_grid, new_figure, pca_2d, plot_interpolation, plot_latent, plot_loss,
                         plot_reconstructions, plot_samples, save_png, tile_images)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "tests", "data", "mnist-sample")


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR" and data[-8:-4] == b"IEND"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def digits():
    images, labels = load_idx_split(SAMPLE, "t10k")
    return images[:300], labels[:300]


HISTORY = [dict(epoch=e, train_loss=200 - 10 * e, train_recon=180 - 12 * e, train_kl=20 + 2 * e,
                test_loss=195 - 9 * e, test_recon=176 - 11 * e, test_kl=19 + 2 * e) for e in (1, 2, 3)]


def test_reconstructions_png(digits, tmp_path):
    images, _ = digits
    fig = plot_reconstructions(images[:10], images[:10] / 255.0, tmp_path / "r.png", title="T")
    w, h = png_size(tmp_path / "r.png")
    assert 800 <= w <= 1600 and 200 <= h <= 500
    assert fig.get_suptitle() == "T"


def test_samples_png(digits, tmp_path):
    images, _ = digits
    plot_samples(images[:64], tmp_path / "s.png")
    w, h = png_size(tmp_path / "s.png")
    assert 500 <= w <= 1200 and 500 <= h <= 1200


def test_interpolation_png(digits, tmp_path):
    images, _ = digits
    fig = plot_interpolation(images[:9] / 255.0, tmp_path / "i.png", title="0 -> 6")
    assert png_size(tmp_path / "i.png")[0] >= 800
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert labels[0] == "t = 0" and labels[4] == "t = 4/8" and labels[-1] == "t = 1"


@pytest.mark.parametrize("shape", [(28, 28), (56, 14), (14, 56)])
def test_interpolation_png_is_one_row_tall(digits, tmp_path, shape):
    """The figure is as tall as its row of images, their captions and the title: no empty band."""
    images, _ = digits
    plot_interpolation(images[:9] / 255.0, tmp_path / "i.png", image_shape=shape, title="0 -> 6")
    width, height = png_size(tmp_path / "i.png")
    row = width / 9 * shape[0] / shape[1]                # one image's height at the figure's width
    assert row < height <= row + 70                      # + captions and title, at 100 dpi


def test_loss_png(tmp_path):
    fig = plot_loss(HISTORY, tmp_path / "l.png")
    assert png_size(tmp_path / "l.png")[0] >= 1000
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Reconstruction", "KL(q(z|x) || p(z))"]
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    no_test = [{**r, "test_loss": None, "test_recon": None, "test_kl": None} for r in HISTORY[:1]]
    fig = plot_loss(no_test, tmp_path / "l1.png")                # one epoch, train only
    assert all(len(ax.get_lines()) == 1 for ax in fig.axes)
    png_size(tmp_path / "l1.png")
    with pytest.raises(InputError, match="empty"):
        plot_loss([])


def test_a_long_run_is_drawn_as_lines_without_markers():
    """200 epochs of markers merge into a thick band; a short run keeps them, one per epoch."""
    def history(n):
        return [{"epoch": e, "train_loss": 100 + 50 / e, "test_loss": 101 + 50 / e} for e in range(1, n + 1)]
    for n, marked in ((40, True), (200, False)):
        lines = plot_loss(history(n)).axes[0].get_lines()
        assert [line.get_marker() not in ("None", None, "") for line in lines] == [marked, marked], n
        assert [line.get_linestyle() for line in lines] == ["-", "--"]


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (10, (3, 4)), (64, (8, 8)), (100, (10, 10))])
def test_samples_grid_fits_the_images(n, shape):
    images = np.random.default_rng(0).random((n, 16)).astype(np.float32)
    grid = tile_images(images, *shape)                          # what plot_samples lays out
    fig = plot_samples(images)
    assert fig.axes[0].get_images()[0].get_array().shape == grid.shape
    with pytest.raises(InputError, match=r"do not fit a 2 x 2 grid: pass nrows and ncols"):
        plot_samples(np.zeros((5, 16)), nrows=2, ncols=2)
    with pytest.raises(InputError, match="empty"):
        plot_samples(np.zeros((0, 16)))


def test_loss_png_from_the_records_of_a_loop_of_your_own(tmp_path):
    """Only the quantities a loop recorded get a panel; no empty panels, no legend warnings."""
    records = [{"train_loss": 300.0 - 10 * i, "test_loss": 310.0 - 9 * i} for i in range(4)]   # no "epoch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_loss(records, tmp_path / "mine.png")
    assert [ax.get_title() for ax in fig.axes] == ["Loss"]
    assert [list(line.get_xdata()) for line in fig.axes[0].get_lines()] == [[1, 2, 3, 4]] * 2
    assert png_size(tmp_path / "mine.png")[0] >= 400
    with pytest.raises(InputError, match=r"no values to plot.*got keys \['loss', 'step'\]"):
        plot_loss([{"step": 1, "loss": 3.0}])


@pytest.mark.parametrize("latent", [1, 2, 5])
def test_latent_png(digits, tmp_path, latent):
    images, labels = digits
    model = VAE(784, 16, latent, rng=0)
    mu, _ = model.encode(images / 255.0)
    names = [f"class {i}" for i in range(10)]
    fig = plot_latent(mu, labels, tmp_path / "z.png", class_names=names, model=model, grid=6)
    w, h = png_size(tmp_path / "z.png")
    assert w >= 700 and h >= 500
    assert len(fig.axes) == (2 if latent == 2 else 1)            # the manifold only for d = 2
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == [f"class {i}" for i in np.unique(labels)]
    if latent > 2:
        assert "PC1" in fig.axes[0].get_xlabel()
    boxes = fig.axes[0].patches         # d = 2: where the manifold lies among the points (its own scale)
    if latent == 2:
        _, values = latent_grid(model, 6)
        assert len(boxes) == 1 and np.allclose(boxes[0].get_bbox().get_points(), [[values[0]] * 2, [values[-1]] * 2])
        huddled = plot_latent(1e-3 * mu, labels, model=model, grid=6).axes[0]     # means near 0: a posterior collapse
        assert np.ptp(huddled.get_xlim()) < 0.1 and np.ptp(huddled.get_ylim()) < 0.1   # the points' scale, not the square's
        far = plot_latent(mu + 10.0, labels, model=model, grid=6).axes[0]    # an undertrained model's means, far off
        for lo, hi, v in ((*far.get_xlim(), mu[:, 0] + 10), (*far.get_ylim(), mu[:, 1] + 10)):
            assert lo <= values[0] and hi >= v.max(), (lo, hi)    # out of the points' view: the view grows to it
    else:
        assert not boxes


def test_tile_images_layout():
    imgs = np.arange(6, dtype=np.float32).reshape(6, 1) * np.ones((1, 4), np.float32) / 10
    grid = tile_images(imgs, 2, 4, pad=1, pad_value=-1)
    assert grid.shape == (2 * 3 + 1, 4 * 3 + 1)
    assert grid[1, 1] == 0.0 and grid[1, 4] == pytest.approx(0.1) and grid[4, 1] == pytest.approx(0.4)
    assert grid[4, 10] == -1                                      # unused cell
    with pytest.raises(InputError, match="square"):
        tile_images(np.zeros((2, 10)), 1, 2)
    assert tile_images(np.zeros((2, 10)), 1, 2, image_shape=(2, 5)).shape == (6, 16)
    with pytest.raises(InputError, match="do not fit"):
        tile_images(np.zeros((5, 4)), 2, 2)


def test_bad_arguments_are_named_before_matplotlib_sees_them(digits, tmp_path):
    images, labels = digits
    x = images[:4] / 255.0
    mu = np.random.default_rng(0).standard_normal((4, 3))
    for call, match in [
        (lambda: tile_images(x, 2.0, 5), "nrows must be a positive int"),
        (lambda: tile_images(x, -1, -20), "nrows must be a positive int"),
        (lambda: plot_samples(x, image_shape=(3, 3)), r"image_shape \(3, 3\) holds 9 pixels, images rows have 784"),
        (lambda: plot_samples(x, image_shape=5), r"image_shape must be \(height, width\)"),
        (lambda: plot_samples(np.full((2, 784), np.nan)), r"\[0, 1\].*NaN"),
        (lambda: plot_samples(x * 3), r"must lie in \[0, 1\]"),
        (lambda: plot_interpolation(x[:0]), "empty"),
        (lambda: save_png(plot_samples(x), tmp_path / "unused.png", dpi=0), "dpi must be a finite number > 0"),
        (lambda: latent_grid(VAE(784, 8, 2, rng=0), n=2.5), "n must be a positive int"),
        (lambda: latent_grid(VAE(784, 8, 2, rng=0), n=-1), "n must be a positive int"),
        (lambda: latent_grid(VAE(784, 8, 2, rng=0), lo=0.0), "0 < lo < hi < 1"),
        (lambda: plot_latent(mu, labels[:4], class_names=["a"]), r"class_names \(1 names\) needs integer labels"),
        (lambda: plot_latent(mu, np.array(list("abcd")), class_names=list("abcd")), "integer labels"),
        (lambda: plot_latent(np.full((4, 3), np.nan), labels[:4]), "NaN or inf"),
        (lambda: plot_latent(mu[:1], labels[:1]), "at least 2 rows"),
        (lambda: plot_latent(mu[:2], labels[:2], grid=0), "grid must be a positive int"),
        (lambda: plot_latent(mu, labels[:4, None]), r"labels must be 1-D \(one per row of mu\), got shape \(4, 1\)"),
        (lambda: save_png(plot_samples(x), tmp_path / "unused.png", dpi=1e5), r"dpi=100000 makes .* pixels"),
        (lambda: save_png(plot_samples(x), tmp_path / "unused.png", dpi=1e-3), r"dpi=0.001 makes .* pixels"),
        (lambda: plot_samples(x, tmp_path / "unused.png", dpi=1e5), r"dpi=100000 makes"),
        (lambda: plot_samples(x, dpi=0), "dpi must be a finite number > 0"),            # no path: checked too
        (lambda: new_figure(0, 4), "width must be a finite number > 0"),
        (lambda: plot_samples(x, dpi=float("nan")), "dpi must be a finite number > 0"),
        (lambda: plot_loss([{"train_loss": 1.0}], dpi=1e5), r"dpi=100000 makes"),
        (lambda: plot_loss(np.array([1.0, 2.0])), r"history must be a list of per-epoch dicts.*got ndarray"),
        (lambda: plot_loss([{"epoch": None, "train_loss": 1.0}]), r"history\[0\]\['epoch'\] must be a number, got None"),
        (lambda: plot_loss([{"train_loss": 1.0}, {"train_loss": "2"}]), r"history\[1\]\['train_loss'\] must be a number"),
        (lambda: latent_grid(None), "latent_grid: model must be an npvae.VAE, got NoneType"),
        (lambda: latent_grid(VAE(784, 8, 2, rng=0), lo="a"), "0 < lo < hi < 1, got 'a'"),
    ]:
        with pytest.raises((InputError, InputTypeError), match=match):
            call()
    assert os.listdir(tmp_path) == []


def test_pca_2d():
    rng = np.random.default_rng(0)
    pts = rng.standard_normal((500, 3)) * [5.0, 2.0, 0.1]
    xy, ratio = pca_2d(pts)
    assert xy.shape == (500, 2)
    assert ratio[0] > ratio[1] > 0 and ratio.sum() > 0.99
    assert np.var(xy[:, 0]) == pytest.approx(25, rel=0.15)


def test_pca_2d_of_points_that_do_not_vary_and_of_bad_points():
    xy, ratio = pca_2d(np.full((50, 20), 0.3))              # a collapsed posterior: every mean alike
    assert np.array_equal(ratio, [0.0, 0.0]) and np.allclose(xy, 0)
    for bad in (np.zeros((1, 3)), np.zeros((5, 1)), np.zeros(5), np.array([[0.0, np.nan], [1.0, 2.0]])):
        with pytest.raises(InputError, match="points"):
            pca_2d(bad)


@pytest.mark.parametrize("flip", [(1, 1, 1), (-1, 1, 1), (1, -1, 1), (-1, -1, -1)])
def test_pca_2d_axes_have_a_fixed_sign(flip):
    # A mirrored latent plot is the same SVD with an axis's sign flipped; the
    # convention (largest loading positive) makes each axis point along +x, +y here.
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((400, 3)) * [5.0, 2.0, 0.1] * flip
    xy, _ = pca_2d(pts)
    assert np.corrcoef(xy[:, 0], pts[:, 0])[0, 1] > 0.99
    assert np.corrcoef(xy[:, 1], pts[:, 1])[0, 1] > 0.99
    again, _ = pca_2d(pts[::-1])
    np.testing.assert_allclose(again[::-1], xy, atol=1e-9)


def test_latent_png_of_images_that_are_not_square(tmp_path):
    """The manifold of a 2-D latent space for 4 x 5 images: drawn with image_shape, and without
    it an error that says to pass it (plot_latent used to take no image_shape)."""
    model = VAE(20, 6, 2, rng=0)
    mu = np.random.default_rng(0).standard_normal((30, 2))
    labels = np.arange(30) % 3
    with pytest.raises(InputError, match=r"model's images have 20 pixels, not a square: pass image_shape=\(h, w\)"):
        plot_latent(mu, labels, model=model, grid=4)
    fig = plot_latent(mu, labels, tmp_path / "z.png", model=model, grid=4, image_shape=(4, 5))
    assert fig.axes[1].get_images()[0].get_array().shape == (16, 20)      # 4 x 4 cells of 4 x 5
    png_size(tmp_path / "z.png")
    with pytest.raises(InputError, match=r"image_shape \(5, 5\) holds 25 pixels, the model's images have 20"):
        plot_latent(mu, labels, model=model, image_shape=(5, 5))


def test_latent_grid():
    model = VAE(784, 8, 2, rng=0)
    images, values = latent_grid(model, 5)
    assert images.shape == (25, 784) and values.shape == (5,)
    assert values[2] == pytest.approx(0, abs=1e-15)
    # the 5% and 95% quantiles of N(0, 1): -+1.6448536269514722
    np.testing.assert_allclose(values[[0, -1]], [-1.6448536269514722, 1.6448536269514722], rtol=1e-14)
    with pytest.raises(InputError, match="latent_dim=3"):
        latent_grid(VAE(784, 8, 3), 5)
    _, ends = latent_grid(model, 2, lo=np.array(0.05), hi=np.float32(0.95))    # NumPy numbers are numbers
    np.testing.assert_allclose(ends, values[[0, -1]], rtol=1e-6)
    plot_loss([{"epoch": np.array(1), "train_loss": np.float32(3.0)}])


def test_save_png_takes_sides_of_1_to_16384_pixels_and_says_what_the_default_gives(tmp_path):
    save_png(Figure(figsize=(16, 1 / 64)), tmp_path / "edge.png", dpi=1024)     # 16,384 x 16: allowed
    assert png_size(tmp_path / "edge.png") == (16384, 16)
    with pytest.raises(InputError, match=r"20000 x 100 pixels.*the default, 100, gives 2000 x 10\)"):
        save_png(Figure(figsize=(20, 0.1)), tmp_path / "wide.png", dpi=1000)
    with pytest.raises(InputError, match=r"dpi=0.1 makes this figure 0.8 x 0.65 pixels"):
        save_png(Figure(figsize=(8, 6.5)), tmp_path / "tiny.png", dpi=0.1)
    assert sorted(os.listdir(tmp_path)) == ["edge.png"]


def test_plot_loss_refuses_bools_in_a_history():
    with pytest.raises(InputError, match=r"history\[0\]\['train_loss'\] must be a number, got True"):
        plot_loss([{"train_loss": True}, {"train_loss": 2.0}])


@pytest.mark.parametrize("lo, hi", [("0.05", 0.95), (0.05, "0.95"), (0.05, None)])
def test_latent_grid_refuses_quantiles_that_are_not_numbers(lo, hi):
    with pytest.raises(InputError, match="lo and hi must be quantiles"):
        latent_grid(VAE(16, 5, 2, rng=0), 3, lo, hi)


@pytest.mark.parametrize("model", [None, VAE(12, 5, 3, rng=0)])
def test_plot_latent_checks_image_shape_without_a_manifold_too(model):
    mu = np.random.default_rng(0).standard_normal((10, 3))
    with pytest.raises(InputError, match=r"image_shape"):
        plot_latent(mu, np.arange(10) % 3, model=model, image_shape=(0, 5))


def test_the_manifolds_ticks_sit_on_the_middle_of_tiles_that_are_not_square():
    mu = np.random.default_rng(0).standard_normal((10, 2))
    fig = plot_latent(mu, np.arange(10) % 3, model=VAE(28, 5, 2, rng=0), grid=5, image_shape=(4, 7))
    np.testing.assert_allclose(fig.axes[1].get_xticks(), np.arange(5) * 7 + 3.5)     # by width across
    np.testing.assert_allclose(fig.axes[1].get_yticks(), np.arange(5) * 4 + 2)       # by height down


def test_a_figure_shows_in_a_notebook_without_pyplot(digits):
    """IPython shows an object's ``_repr_png_``: without it, a figure made without pyplot
    showed as ``<Figure size 680x720 with 1 Axes>`` unless ``%matplotlib inline`` had run."""
    images, _ = digits
    fig = plot_samples(images[:4], nrows=2, ncols=2)
    png = fig._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == tuple(
        round(v) for v in fig.get_size_inches() * 100)
    assert pickle.loads(pickle.dumps(fig))._repr_png_()[16:24] == png[16:24]     # and it still pickles


def test_a_figures_dpi_is_the_one_a_notebook_shows_too(digits):
    """``dpi`` without a ``path``: the picture a notebook shows has it (it was left at 100)."""
    images, _ = digits
    fig = plot_samples(images[:4], nrows=2, ncols=2, dpi=200)
    png = fig._repr_png_()
    assert struct.unpack(">II", png[16:24]) == tuple(round(v) for v in fig.get_size_inches() * 200)
    assert pickle.loads(pickle.dumps(fig))._repr_png_()[16:24] == png[16:24]     # and a pickled copy


def test_save_png_is_atomic(tmp_path, digits):
    images, _ = digits
    fig = plot_samples(images[:4], nrows=2, ncols=2)
    save_png(fig, tmp_path / "a.png")
    assert os.listdir(tmp_path) == ["a.png"]
    png_size(tmp_path / "a.png")


def test_no_pyplot_and_lazy_matplotlib():
    code = ("import sys, numpy as np, npvae\n"
            "assert 'matplotlib' not in sys.modules, 'import npvae loaded matplotlib'\n"
            "plot_samples = npvae.plots.plot_samples\n"           # there after a plain import
            "assert 'matplotlib' not in sys.modules, 'npvae.plots loaded matplotlib'\n"
            "plot_samples(np.zeros((4, 784)), nrows=2, ncols=2)\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n")
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("mplbackend, message", [(None, "Key backend: 'x' is not a valid value for backend"),
                                                  ("agg", "numpy.dtype size changed, may indicate binary "
                                                          "incompatibility")])
def test_a_value_error_from_matplotlibs_import_not_about_mplbackend_is_left_as_it_is(monkeypatch, mplbackend,
                                                                                      message):
    """Only a bad $MPLBACKEND is called one: a matplotlibrc's or another cause keeps matplotlib's own words."""
    import importlib
    real = importlib.import_module

    def import_module(name, *args):
        if name == "matplotlib":
            raise ValueError(message)
        return real(name, *args)
    monkeypatch.setattr(importlib, "import_module", import_module)
    if mplbackend is None:
        monkeypatch.delenv("MPLBACKEND", raising=False)
    else:
        monkeypatch.setenv("MPLBACKEND", mplbackend)
    with pytest.raises(ValueError) as raised:
        plot_samples(np.zeros((4, 784)))
    assert type(raised.value) is ValueError and str(raised.value) == message


def test_an_mplbackend_that_breaks_matplotlibs_import_is_named_with_what_to_do():
    """matplotlib checks MPLBACKEND as it is imported (here: at the first figure), with a ValueError
    of its own; npvae draws with Agg and needs no backend, and says so."""
    code = ("import numpy as np, npvae\n"
            "for draw in (lambda: npvae.plots.plot_samples(np.zeros((4, 784))),\n"
            "             lambda: npvae.plots.plot_latent(np.zeros((3, 2)), labels=np.arange(3))):\n"
            "    try:\n"
            "        draw()\n"
            "    except npvae.errors.InputError as e:\n"
            "        print(e)\n")
    env = {**os.environ, "PYTHONPATH": ROOT, "MPLBACKEND": "nonsense"}
    said = subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=120,
                          capture_output=True, text=True).stdout.splitlines()
    assert len(said) == 2 and all(line.startswith("matplotlib cannot be imported with MPLBACKEND='nonsense': ")
                                  and line.endswith("unset MPLBACKEND or set it to agg") for line in said), said


@pytest.mark.parametrize("draw", ["samples", "interpolation"])
def test_a_long_title_wraps_inside_the_figure(draw):
    """A title wider than the figure is wrapped onto more lines, not cut off at its edges."""
    images = np.random.default_rng(0).random((16, 784))
    title = "a title far longer than the figure is wide " * 4
    if draw == "samples":
        fig = plot_samples(images, title=title)
        text = fig.axes[0].title
    else:
        fig = plot_interpolation(images[:4], title=title)
        text = fig.texts[0]                                 # the figure's suptitle
    fig.canvas.draw()
    box, edge = text.get_window_extent(fig.canvas.get_renderer()), fig.bbox
    assert edge.x0 <= box.x0 and box.x1 <= edge.x1 and box.y1 <= edge.y1


def test_plot_loss_says_when_the_train_loss_was_taken_with_a_warming_kl_weight():
    """With warm-up the train loss weighs the KL less than the test loss does: the figure says so."""
    record = dict(train_loss=200.0, test_loss=190.0, train_recon=180.0, test_recon=170.0)
    ramp = [dict(record, epoch=1, beta_start=0.003, beta=0.2), dict(record, epoch=2, beta_start=0.2, beta=0.4)]
    loss, recon = plot_loss(ramp).axes[:2]
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train (KL weight 0.003 to 0.4: warm-up)", "test"]
    assert [t.get_text() for t in recon.get_legend().get_texts()] == ["train", "test"]    # no KL weight in it
    flat = [dict(record, epoch=e, beta_start=1.0, beta=1.0) for e in (1, 2)]
    assert [t.get_text() for t in plot_loss(flat).axes[0].get_legend().get_texts()] == ["train", "test"]
    own = [dict(record, epoch=e, beta="cyclic") for e in (1, 2)]     # a loop of one's own: its own keys
    assert [t.get_text() for t in plot_loss(own).axes[0].get_legend().get_texts()] == ["train", "test"]


def test_plot_loss_draws_train_and_test_in_one_colour_each_in_every_panel():
    """A loop of one's own that records the test parts but not the train ones: "test" stays the
    test colour in the panels where it is alone."""
    history = [dict(epoch=e, train_loss=200.0 - e, test_loss=190.0 - e, test_recon=170.0 - e, test_kl=20.0)
               for e in (1, 2)]
    colours = {}
    for ax in plot_loss(history).axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"train", "test"} and all(len(c) == 1 for c in colours.values()), colours
    assert colours["train"] != colours["test"]


@pytest.mark.parametrize("suffix", ["svg", "pdf", "JPG"])
def test_a_name_of_another_image_format_is_refused_not_written_as_a_png(tmp_path, suffix):
    """A 'loss.pdf' that is really a PNG is rejected by the slide software it was made for."""
    with pytest.raises(InputError, match=rf"names a .{suffix.lower()} file, but npvae writes its figures as PNG"):
        plot_loss(HISTORY, tmp_path / f"loss.{suffix}")
    assert os.listdir(tmp_path) == []
    plot_loss(HISTORY, tmp_path / "loss")           # no suffix, or one that is no image format: a PNG
    plot_loss(HISTORY, tmp_path / "loss.v2")
    assert all(png_size(tmp_path / name) for name in ("loss", "loss.v2"))


@pytest.mark.parametrize("shape", [(56, 14), (14, 56)])
def test_samples_and_reconstructions_take_the_shape_of_images_that_are_not_square(tmp_path, shape):
    """The figure follows the images' aspect (it used to be sized for square ones, with wide empty
    bands): a grid of 4 x 4 tall images is taller than wide, of wide ones wider than tall."""
    images = np.random.default_rng(0).random((16, shape[0] * shape[1]))
    plot_samples(images, tmp_path / "s.png", image_shape=shape)
    width, height = png_size(tmp_path / "s.png")
    tall = shape[0] > shape[1]
    assert (height > 1.5 * width) if tall else (width > 2 * height)
    plot_reconstructions(images[:8], images[:8], tmp_path / "r.png", image_shape=shape)
    width, height = png_size(tmp_path / "r.png")
    assert (height > 400) if tall else (height < 200)


def test_a_one_dimensional_latent_space_gets_a_strip_per_class(digits):
    images, labels = digits
    mu = np.random.default_rng(0).standard_normal((len(labels), 1))
    fig = plot_latent(mu, labels)
    ax = fig.axes[0]
    assert ax.get_ylabel() == "class"
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(c) for c in np.unique(labels)]
    for k, collection in enumerate(ax.collections):        # each class's points sit on its own row
        ys = collection.get_offsets()[:, 1]
        assert np.all(np.abs(ys - k) <= 0.3)
    ax = plot_latent(mu[:40], np.array([3, 7] * 20)).axes[0]     # rows by rank, whatever the labels
    assert [np.abs(c.get_offsets()[:, 1] - k).max() <= 0.3 for k, c in enumerate(ax.collections)] == [True, True]


def test_a_class_keeps_its_colour_whichever_others_are_present_and_20_are_told_apart():
    mu = np.random.default_rng(0).standard_normal((40, 2))

    def colours(labels):
        ax = plot_latent(mu[:len(labels)], labels).axes[0]
        return {t.get_text(): tuple(c.get_facecolor()[0][:3]) for t, c in zip(ax.get_legend().get_texts(),
                                                                                 ax.collections)}
    full = colours(np.arange(20) % 10)
    assert colours(np.array([7, 7, 3]))["7"] == full["7"] and colours(np.array([3, 7]))["3"] == full["3"]
    twenty = colours(np.arange(40) % 20)
    assert len(set(twenty.values())) == 20
    assert colours(np.array([3, 7], np.uint8))["7"] == full["7"]              # MNIST's labels are uint8
    assert len(set(colours(np.arange(1, 11)).values())) == 10                 # 1..10: by rank, ten colours
    assert len(set(colours(np.array([-1, 0, 1, 2])).values())) == 4           # -1, "unlabelled", say
    with pytest.raises(InputError, match="21 classes; plot_latent tells at most 20 apart"):
        plot_latent(np.zeros((21, 2)), np.arange(21))


def test_plot_loss_marks_an_epoch_that_is_not_finite():
    history = [dict(HISTORY[0]), dict(HISTORY[1], train_loss=float("inf")), dict(HISTORY[2], test_kl=float("nan"))]
    fig = plot_loss(history)
    loss, _, kl = fig.axes
    marks = {ax: [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"] for ax in fig.axes}
    assert marks[loss] == [2] and marks[kl] == [3] and marks[fig.axes[1]] == []
    assert "NaN or inf" in [t.get_text() for t in loss.get_legend().get_texts()]
    assert loss.get_ylim()[1] < 1000                 # the inf did not stretch the axis


def test_a_grid_of_one_decodes_the_centre_and_ticks_use_minus_signs(digits):
    model = VAE(784, 8, 2, rng=0)
    _, values = latent_grid(model, 1)
    assert values.tolist() == [0.0]
    _, values = latent_grid(model, 1, lo=0.1, hi=0.3)              # the middle of the range asked for
    np.testing.assert_allclose(values, [-0.8416212335729143], rtol=1e-12)   # the 20% quantile
    fig = plot_latent(np.zeros((4, 2)), [0, 1, 0, 1], model=model, grid=5)
    ticks = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert ticks[0] == "\u22121.6" and "-" not in "".join(ticks)
    assert ticks[2] == "0.0"                # the middle quantile's -1.4e-16, not "-0.0"


def test_images_of_one_row_still_draw_within_the_figure_limits(tmp_path):
    """1 x 784 'images' (a signal each) would ask for a figure 22,400 pixels wide: drawn smaller."""
    x = np.random.default_rng(0).random((8, 784))
    plot_reconstructions(x, x, tmp_path / "r.png", image_shape=(1, 784))
    plot_samples(x, tmp_path / "s.png", image_shape=(1, 784))
    assert all(max(png_size(tmp_path / name)) <= 8500 for name in ("r.png", "s.png"))


@pytest.mark.parametrize("n, shape", [(90, None), (8, (1000, 1))])     # 90: a caption every other frame
def test_an_interpolation_of_many_or_tall_images_is_drawn_within_the_figure_limits(tmp_path, n, shape):
    """150 frames asked for 16,500 pixels, and the error blamed a dpi no one gave."""
    x = np.random.default_rng(0).random((n, 784 if shape is None else 1000))
    fig = plot_interpolation(x, tmp_path / "i.png", image_shape=shape)
    assert max(png_size(tmp_path / "i.png")) <= 8000
    captions = [ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()]     # as many as fit side by side
    assert fig.get_figwidth() >= 4                  # tall images: not a sliver that its layout collapses
    assert captions[0] == "t = 0" and captions[-1] == "t = 1" and len(captions) <= fig.get_figwidth() / 0.9


def test_paths_that_name_no_file_and_a_figure_that_is_none_are_refused(tmp_path, digits):
    fig = plot_samples(digits[0][:4])
    with pytest.raises(InputError, match=r"new/: that names a folder, not a file; give a file path"):
        save_png(fig, f"{tmp_path}/new/")           # was written as a PNG file named "new"
    with pytest.raises(InputError, match=r"new/\.: that names a folder"):
        save_png(fig, f"{tmp_path}/new/.")
    with pytest.raises(InputError, match="empty path"):
        save_png(fig, "")
    (tmp_path / "file").write_text("x")
    for below in (tmp_path / "file" / "x.png", tmp_path / "file" / "deeper" / "x.png"):
        with pytest.raises(InputError, match=r"x\.png: a file stands where a folder of that path goes"):
            save_png(fig, below)
    with pytest.raises(InputTypeError, match=r"got bytes .*os\.fsdecode"):
        save_png(fig, os.fsencode(tmp_path / "b.png"))
    with pytest.raises(InputTypeError, match="fig must be a matplotlib Figure, got str"):
        save_png("fig", tmp_path / "s.png")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_images_that_are_not_numbers_and_labels_that_are_nan_or_mixed_are_refused(digits):
    with pytest.raises(InputTypeError, match=r"originals must hold numbers .* got dtype <U1"):
        plot_reconstructions(np.full((2, 784), "a"), digits[0][:2])
    for pad_value in ("x", float("nan"), float("inf")):
        with pytest.raises(InputTypeError, match="pad_value must be a number"):
            tile_images(digits[0][:4], 2, 2, pad_value=pad_value)
    mu = np.random.default_rng(0).standard_normal((6, 2))
    with pytest.raises(InputError, match=r"labels hold NaN \(2 of 6\)"):   # none of them was drawn, "nan" listed
        plot_latent(mu, [0, 1, np.nan, 1, np.nan, 0])
    with pytest.raises(InputError, match=r"labels hold NaN \(1 of 6\)"):
        plot_latent(mu, np.array(["a", "b", np.nan, "a", "b", "a"], dtype=object))
    with pytest.raises(InputTypeError, match="labels must be of one kind .* got int, str"):
        plot_latent(mu, np.array([1, "a", 2, "b", 1, 2], dtype=object))


def test_one_image_as_a_2d_array_is_told_how_to_pass_it():
    """A 2-D array is rows of images: one 28 x 28 image is 28 rows of 28 pixels, not a square,
    and the message (and the one for image_shape) says how to pass it as one image."""
    img = np.zeros((28, 28), np.float32)
    for kwargs in ({}, {"image_shape": (28, 28)}):
        with pytest.raises(InputError, match=r"if it is one 28 x 28 image, pass images\[None\]"):
            plot_samples(img, **kwargs)
    assert plot_samples(img[None]) is not None


def test_reconstructions_of_one_flat_image_are_refused_for_their_shape_not_their_length():
    x = np.zeros(784, np.float32)
    with pytest.raises(InputError, match=r"originals must be \(N, pixels\) or \(N, height, width\), got shape \(784,\)"):
        plot_reconstructions(x, np.zeros((16, 784), np.float32))
    with pytest.raises(InputError, match=r"got 2 originals but 3 reconstructions"):
        plot_reconstructions(np.zeros((2, 784)), np.zeros((3, 784)))


def test_a_masked_array_of_images_is_refused_not_drawn_with_its_hidden_values():
    images = np.ma.masked_greater(np.full((4, 16), 0.5, np.float32), 0.4)
    with pytest.raises(InputTypeError, match=r"images is a masked array.*filled"):
        plot_samples(images)


def test_masked_latent_points_are_refused_and_a_matrix_of_images_is_drawn():
    mu = np.ma.masked_greater(np.random.default_rng(0).normal(size=(10, 2)), 1.0)
    with pytest.raises(InputTypeError, match=r"mu is a masked array"):
        plot_latent(mu, np.arange(10) % 3)
    with pytest.raises(InputTypeError, match=r"points is a masked array"):
        pca_2d(mu)
    images = np.random.default_rng(0).integers(0, 256, (4, 16), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        as_matrix = np.matrix(images)
    assert np.array_equal(tile_images(as_matrix, 2, 2), tile_images(images, 2, 2))


def test_the_one_image_hint_names_the_argument_and_its_height_by_width():
    with pytest.raises(InputError, match=r"if it is one 20 x 28 image, pass images\[None\]"):
        plot_samples(np.zeros((20, 28), np.float32))
    with pytest.raises(InputError, match=r"if it is one 28 x 28 image, pass originals\[None\]"):
        plot_reconstructions(np.zeros((28, 28)), np.zeros((28, 28)))


def test_fewer_reconstructions_than_originals_are_refused():
    with pytest.raises(InputError, match=r"got 3 originals but 2 reconstructions"):
        plot_reconstructions(np.zeros((3, 784)), np.zeros((2, 784)))
