"""The tutorial's two claims, as their example scripts show them (run as a user runs them)."""
import importlib.util
import os
import re
import struct
import subprocess
import sys

import pytest

from npvae import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
ENV = {**os.environ, "PYTHONPATH": ROOT, "NPVAE_DATA_DIR": "/nonexistent"}


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=300)


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def load(script):
    spec = importlib.util.spec_from_file_location(script[:-3], os.path.join(EXAMPLES, script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kl_curve(tmp_path_factory):
    """One run of kl_curve.py, read by the two tests below: its output and its figure."""
    out = tmp_path_factory.mktemp("kl") / "kl.png"
    proc = run("kl_curve.py", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return proc, out


def test_kl_curve_is_smallest_at_variance_one(kl_curve):
    proc, out = kl_curve
    v = float(re.search(r"smallest at V = ([\d.]+)", proc.stdout).group(1))
    assert abs(v - 1.0) < 0.01
    width, height = png_size(out)
    assert width >= 1000 and height >= 400


def test_kl_curve_has_variance_one_on_its_grid(kl_curve, tmp_path):
    proc, _ = kl_curve
    assert "smallest at V = 1.000 (on a grid of step 0.01)" in proc.stdout and "where it is 0.00e+00" in proc.stdout
    V, curves = load("kl_curve.py").draw(str(tmp_path / "again.png"))
    assert V.min() <= 1e-6 and curves[0.0][0] > 6          # the curve climbs out of the frame as V -> 0


@pytest.mark.parametrize("script", ["kl_curve.py", "latent_bubbles.py"])
@pytest.mark.parametrize("out, message", [
    ("{tmp}/figure.jpg", "the file is written as PNG; give it a .png name"),
    ("{tmp}/", "is a folder; name the .png file to write"),
    ("{tmp}/new/", "is a folder; name the .png file to write"),          # one that does not exist yet
    ("{tmp}/a_file/x.png", "the folder {tmp}/a_file is a file, not a folder"),
    ("{tmp}/" + "a" * 246 + ".png", "the file name is too long (250 bytes; at most 241)"),
])
def test_a_bad_out_is_refused_before_any_work(tmp_path, script, out, message):
    (tmp_path / "a_file").write_text("not a folder")
    out, message = out.format(tmp=tmp_path), message.format(tmp=tmp_path)
    proc = run(script, "--out", out, "--epochs", "1") if script == "latent_bubbles.py" else run(script, "--out", out)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "training" not in proc.stderr                     # refused before the models were trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_without_the_kl_term_the_bubbles_drift_apart_and_shrink(tmp_path):
    # the shipped 1,000 digits, a small model: some 130 Adam steps per beta, well under a second
    out = tmp_path / "bubbles.png"
    proc = run("latent_bubbles.py", "--epochs", "10", "--hidden-dim", "64", "--batch-size", "64",
               "--points", "200", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "800 training images, 200 held out" in proc.stderr
    spread = {float(beta): (float(mu), float(var)) for beta, mu, var in
              re.findall(r"^beta = (\S+)\s+(\S+)\s+(\S+)", proc.stdout, flags=re.M)}
    assert set(spread) == {0.0, 1.0}, proc.stdout
    (mu0, var0), (mu1, var1) = spread[0.0], spread[1.0]
    assert mu0 > 1.5 * mu1, spread          # drift apart (seen: 13.0 against 3.9; 13.3 against 3.2 at 20 epochs)
    assert var0 < 0.5 * var1, spread        # and shrink (seen: 0.03 against 0.35; 0.011 against 0.106 at 20)
    width, height = png_size(out)
    assert width >= 1000 and height >= 1000


def test_latent_bubbles_refuses_bad_arguments_clearly(tmp_path, capsys):
    script = load("latent_bubbles.py")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--epochs", "0"])
    assert exit_info.value.code == 2
    assert "--epochs: must be at least 1, got 0" in capsys.readouterr().err
    assert cli.run(script.main, ["--data-dir", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "--data-dir was given" in err                                # the flag, not the Python argument
    assert "leave it out to use the 1,000 digits shipped" in err and "download" not in err   # what it does
    assert cli.run(script.main, ["--lr", "1e30", "--epochs", "1", "--out", str(tmp_path / "x.png")]) == 1
    assert "training diverged" in capsys.readouterr().err               # a failure at run time: 1
    assert script.main(["--train", "1000", "--out", str(tmp_path / "x.png")]) == 2
    assert "--train must be between 1 and 999 (the rest is held out: the 1,000 digits shipped in tests/data/" \
           "mnist-sample; --data-dir with the MNIST test set has 10,000), got 1000" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--lr=-1", "--epochs", "1", "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "--lr: must be greater than 0" in capsys.readouterr().err
    for flags, words in ((["--lr", "1e-50"], "--lr: 1e-50 is 0 in float32"), (["--lr", "1e39"], "--lr: 1e39 overflows"),
                         (["--data-dir", ""], "--data-dir: must name a folder, got ''")):   # not the shipped sample
        with pytest.raises(SystemExit) as exit_info:
            script.main([*flags, "--epochs", "1", "--out", str(tmp_path / "x.png")])
        assert exit_info.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_a_folder_name_stdout_cannot_encode_is_printed_escaped(tmp_path):
    """PYTHONIOENCODING=ascii and a folder named with a u-umlaut: the figure and the last line."""
    out = tmp_path / "v \u00fc" / "kl.png"
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "kl_curve.py"), "--out", str(out)],
                          capture_output=True, text=True, encoding="ascii", errors="strict",
                          env={**ENV, "PYTHONIOENCODING": "ascii"}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("wrote " + str(out).replace("\u00fc", "\\xfc")), proc.stdout
    assert png_size(out)[0] >= 1000


def test_latent_bubbles_copied_out_of_its_checkout_asks_for_data_dir(tmp_path):
    """Without --data-dir it reads the sample shipped in tests/data; a copy elsewhere has none."""
    (tmp_path / "mine").mkdir()
    copy = tmp_path / "mine" / "latent_bubbles.py"
    copy.write_text(open(os.path.join(EXAMPLES, "latent_bubbles.py"), encoding="utf-8").read(), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(copy), "--out", str(tmp_path / "x.png")], capture_output=True,
                          text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not at " + os.path.join(str(tmp_path), "tests", "data", "mnist-sample") in proc.stderr
    assert "pass --data-dir" in proc.stderr and "was given" not in proc.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("unbuffered", ["", "1"])          # the lines sit in Python's buffer, or not
def test_a_reader_that_leaves_early_stops_the_script_quietly_with_sigpipes_status(tmp_path, unbuffered):
    """``worked_example.py | head -0``: as gradcheck does and other programs do, status 141, no
    "error: Broken pipe" (it used to end with that and status 1, its work done)."""
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"} | ({"PYTHONUNBUFFERED": "1"} if unbuffered else {})
    proc = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, "worked_example.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    proc.stdout.close()                         # the reader is gone before the script prints
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=300) == cli.EXIT_CLOSED_PIPE == 141
    assert not any(word in err for word in ("error", "Exception", "Traceback")), err     # quiet


def test_a_script_started_with_stdout_closed_does_its_work_and_exits_0():
    """``>&-``: Python has no sys.stdout at all; the work is done and nothing is called a bug."""
    command = f"{sys.executable} {os.path.join(EXAMPLES, 'worked_example.py')} >&-"
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and proc.stderr.startswith("checked: ") and "error" not in proc.stderr, proc.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_that_cannot_be_written_is_said_to_be_the_output(tmp_path):
    """``> /dev/full``: "No space left on device" alone did not say which file; the figure is written."""
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}        # the lines wait in the buffer
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "kl_curve.py"), "--out", str(tmp_path / "k.png")],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr == "error: cannot write the output (stdout): No space left on device\n", proc.stderr
    assert png_size(tmp_path / "k.png")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_help_that_cannot_be_written_is_a_failure_said_as_such():
    """``--help > /dev/full`` exited 0 with nothing written, where ``python -m gradcheck --list``
    says it and exits 1: the help is output as any other."""
    said = "error: cannot write the output (stdout): No space left on device\n"
    buffered = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    for env in (buffered, {**ENV, "PYTHONUNBUFFERED": "1"}):       # (the second: as containers often run)
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, "kl_curve.py"), "--help"],
                                  stdout=full, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=300)
        assert (proc.returncode, proc.stderr) == (1, said)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "gradcheck", "--help"], stdout=full, stderr=subprocess.PIPE,
                              text=True, env={**ENV, "PYTHONUNBUFFERED": "1"}, cwd=ROOT, timeout=300)
    assert (proc.returncode, proc.stderr) == (1, said)
    closed = subprocess.run(["sh", "-c", '"$0" "$1" --help >&-', sys.executable, os.path.join(EXAMPLES, "kl_curve.py")],
                            capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert closed.returncode == 0 and closed.stderr.startswith("usage: kl_curve.py")     # stdout closed: on stderr


@pytest.mark.parametrize("script", ["latent_bubbles.py", "quickstart.py"])
def test_a_program_that_trains_then_draws_refuses_a_bad_mplbackend_before_it_trains(script, tmp_path):
    """matplotlib checks $MPLBACKEND as it is imported: at the first figure, after the training. That
    was a minute of latent_bubbles' training lost and then an "internal error", and quickstart's
    status of bad input (2) after writing its checkpoint. Both refuse it first now, with nothing written."""
    out = str(tmp_path / "out")
    args = ["--epochs", "1", "--out", os.path.join(out, "b.png")] if script == "latent_bubbles.py" else \
        [os.path.join(ROOT, "tests", "data", "mnist-sample"), "--out", out]
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, script), *args], capture_output=True, text=True,
                          env={**ENV, "MPLBACKEND": "nonsense"}, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: matplotlib cannot be imported with MPLBACKEND='nonsense': "), proc.stderr
    assert "epoch" not in proc.stderr and not os.path.exists(out)


def test_a_figure_path_that_is_a_link_into_a_missing_folder_is_refused(tmp_path, capsys):
    """``--out`` a symbolic link to nothing: the figure went where the link pointed, making every
    missing folder on the way (run as root, one at the file system's root). A link to a file yet
    to be written in a folder that exists is followed, as a link is."""
    dangling = tmp_path / "dangling.png"
    dangling.symlink_to(tmp_path / "nowhere" / "deeper" / "k.png")
    assert cli.run(load("kl_curve.py").main, ["--out", str(dangling)]) == 2
    assert f"--out {dangling} is a symbolic link to {tmp_path / 'nowhere' / 'deeper' / 'k.png'}, in a folder " \
           f"that does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
    later = tmp_path / "later.png"
    later.symlink_to(tmp_path / "k.png")
    assert cli.run(load("kl_curve.py").main, ["--out", str(later)]) == 0
    assert png_size(tmp_path / "k.png")


@pytest.fixture
def kl_figure(monkeypatch, tmp_path):
    """kl_curve.py's figure as matplotlib objects (save_png replaced: nothing written)."""
    script = load("kl_curve.py")
    figures = []
    monkeypatch.setattr(script, "save_png", lambda fig, path, dpi: figures.append(fig))
    V, curves = script.draw(str(tmp_path / "kl.png"))
    (fig,) = figures
    left, right = fig.axes
    return V, curves, left, right


def test_kl_curve_draws_the_closed_forms_under_their_labels(kl_figure):
    """Each line of the figure is the curve its label names, in nats; the right panel's labels
    give each mean's minimum, mu^2 / 2."""
    import numpy as np
    V, curves, left, right = kl_figure
    lines = {line.get_label(): line for line in left.get_lines()}
    kl = next(line for label, line in lines.items() if "npvae's KL" in label)
    np.testing.assert_allclose(kl.get_ydata(), 0.5 * (V - np.log(V) - 1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lines[r"$V - \log V - 1$ (twice the KL)"].get_ydata(), 2 * kl.get_ydata(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(lines[r"$V - 1$: grows as the variance widens"].get_ydata(), V - 1)
    np.testing.assert_allclose(lines[r"$-\log V$: grows without bound as $V \to 0$"].get_ydata(), -np.log(V))
    labelled = [line for line in right.get_lines() if not line.get_label().startswith("_")]
    assert [line.get_label() for line in labelled] == [
        rf"$\mu = {mu}$: minimum $\mu^2/2 = {least}$ at $V = 1$"
        for mu, least in (("0", "0"), ("0.5", "0.125"), ("1", "0.5"), ("1.5", "1.125"))]
    for line, mu in zip(labelled, (0.0, 0.5, 1.0, 1.5)):
        np.testing.assert_allclose(line.get_ydata(), 0.5 * (V + mu ** 2 - 1 - np.log(V)), rtol=1e-12, atol=1e-14)
    assert left.get_ylabel() == right.get_ylabel() == "nats"


def test_kl_curve_refuses_to_draw_a_kl_that_is_not_the_closed_form(monkeypatch, tmp_path):
    """"checked against the formula": npvae's KL 10% too large stops the script, nothing drawn."""
    from npvae import KL
    script = load("kl_curve.py")
    forward = KL.forward
    monkeypatch.setattr(KL, "forward", lambda self, h: 1.1 * forward(self, h))
    monkeypatch.setattr(script, "save_png", lambda fig, path, dpi: pytest.fail("drew a wrong KL"))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        script.draw(str(tmp_path / "kl.png"))


@pytest.fixture
def bubbles(monkeypatch, tmp_path, capsys):
    """latent_bubbles.py run in this process with ``--epochs 3 --points 50``, its training replaced
    by a spy that trains nothing (the models stay as built) and returns made-up test losses; the
    figure kept as matplotlib objects. What fit was given, the z drawn, the printed table."""
    import numpy as np
    from npvae import VAE
    from npvae.data import load_split
    script = load("latent_bubbles.py")
    fits, figures, sample_rngs = [], [], []
    losses = {0.0: {"test_recon": 321.3, "test_kl": 19.25}, 1.0: {"test_recon": 345.6, "test_kl": 7.75}}

    def fit(model, train, test, *, beta, **settings):
        fits.append(dict(model=model, weights={k: v.copy() for k, v in model.state_dict().items()},
                         beta=beta, **settings))
        return [losses[beta]]
    sample = VAE.sample

    def spied_sample(self, n, rng=None):
        sample_rngs.append(rng.bit_generator.state)
        return sample(self, n, rng=rng)
    monkeypatch.setattr(script, "fit", fit)
    monkeypatch.setattr(VAE, "sample", spied_sample)
    monkeypatch.setattr(script, "save_png", lambda fig, path, dpi: figures.append(fig))
    assert script.main(["--epochs", "3", "--hidden-dim", "8", "--points", "50", "--out", str(tmp_path / "b.png")]) == 0
    images, labels = load_split("mnist", "t10k", data_dir=script.SAMPLE)
    (fig,) = figures
    return dict(fits=fits, fig=fig, sample_rngs=sample_rngs, losses=losses, out=capsys.readouterr().out,
                held_out=images[800:], held_out_labels=np.asarray(labels[800:], dtype=int))


def test_latent_bubbles_spread_is_the_mean_distance_from_0_and_the_mean_variance():
    """spread() as the docstring and the table's header say: mean |mu| is the mean Euclidean norm
    of mu (not of its coordinates), mean variance the mean of exp(logvar) (not of sigma)."""
    import numpy as np
    spread = load("latent_bubbles.py").spread
    got = spread(np.array([[3.0, 4.0], [0.0, 0.0]]), np.log(np.array([[1.0, 4.0], [9.0, 16.0]])))
    assert got == {"mean |mu|": pytest.approx(2.5), "mean variance": pytest.approx(7.5)}


def test_latent_bubbles_trains_both_betas_alike_and_prints_what_it_measured(bubbles):
    """Both models start from the same weights, train for --epochs, decode the same z; each printed
    row is that model's spread over the held-out images, then its last epoch's recon and KL."""
    import numpy as np
    fits = bubbles["fits"]
    assert [f["beta"] for f in fits] == [0.0, 1.0] and all(f["epochs"] == 3 for f in fits)
    for name, value in fits[0]["weights"].items():
        assert np.array_equal(fits[1]["weights"][name], value), name
    first, second = bubbles["sample_rngs"]
    assert first == second                                  # the same z ~ N(0, I) for both
    out = bubbles["out"]
    assert "spread of q(z | x) over the 200 held-out images after 3 epochs:\n" in out
    for f in fits:
        mu, logvar = f["model"].encode(bubbles["held_out"].astype(np.float32) / 255)
        loss = bubbles["losses"][f["beta"]]
        row = (f"{'beta = ' + format(f['beta'], 'g'):8}{np.linalg.norm(mu, axis=1).mean():>12.3f}"
               f"{np.exp(logvar).mean():>16.3e}{loss['test_recon']:>12.1f}{loss['test_kl']:>10.2f}\n")
        assert row in out, (row, out)


def test_latent_bubbles_figure_draws_the_held_out_means_one_sigma_and_labels(bubbles):
    """The top panels, beta = 0 on the left: the first --points held-out means, ellipses of
    width 2 sigma = 2 exp(logvar / 2), coloured by those images' digits, the legend's colours alike."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba
    cmap = colormaps["tab10"]
    top, _ = bubbles["fig"].subfigs
    titles = [ax.get_title() for ax in top.axes]
    assert titles[0].startswith("beta = 0 (no KL term): 50 of 200 held-out digits\nover all 200: "), titles
    assert titles[1].startswith("beta = 1 (with the KL term): 50 of 200 held-out digits\n"), titles
    colors = cmap(bubbles["held_out_labels"][:50] % 10)
    for ax, f in zip(top.axes, bubbles["fits"]):
        mu, logvar = f["model"].encode(bubbles["held_out"][:50].astype(np.float32) / 255)
        ellipses, means = ax.collections
        if hasattr(ellipses, "get_widths"):        # matplotlib 3.9 and later (the floor is 3.8)
            np.testing.assert_allclose(ellipses.get_widths(), 2 * np.exp(logvar[:, 0] / 2), rtol=1e-5)
            np.testing.assert_allclose(ellipses.get_heights(), 2 * np.exp(logvar[:, 1] / 2), rtol=1e-5)
        np.testing.assert_allclose(means.get_offsets(), mu, rtol=1e-5)
        np.testing.assert_allclose(means.get_facecolors(), colors)
    handles = top.legends[0].legend_handles
    assert [to_rgba(h.get_color()) for h in handles[:10]] == [cmap(k) for k in range(10)]
    assert [h.get_label() for h in handles[:10]] == [f"digit {k}" for k in range(10)]


def test_a_figure_named_in_capitals_or_without_a_folder_is_written(tmp_path, monkeypatch):
    """curve.PNG is a PNG name on any system; curve.png alone goes into the current folder."""
    script = load("kl_curve.py")
    monkeypatch.chdir(tmp_path)
    assert cli.run(script.main, ["--out", "curve.png"]) == 0
    assert cli.run(script.main, ["--out", str(tmp_path / "UPPER.PNG")]) == 0
    assert sorted(os.listdir(tmp_path)) == ["UPPER.PNG", "curve.png"]
    assert (tmp_path / "UPPER.PNG").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
