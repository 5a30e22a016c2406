"""docs/derivation.md's worked example is exactly what examples/worked_example.py prints."""
import importlib.util
import os
import subprocess
import sys

import pytest

from npvae.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "worked_example.py")
PAGE = os.path.join(ROOT, "docs", "derivation.md")


def load_script():
    spec = importlib.util.spec_from_file_location("worked_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def printed():
    """The script run as a user runs it: its exit status, stdout and stderr."""
    proc = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT}, cwd=ROOT)
    return proc


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines())):
        if x != y:
            return f"line {i + 1} of the block:\n  page:   {x!r}\n  script: {y!r}"
    return f"the page's block has {len(a.splitlines())} lines, the script prints {len(b.splitlines())}"


def test_script_checks_itself_and_prints_every_step(printed):
    # exit 0 means every value matched its formula, model.loss + model.backward(),
    # central finite differences, and Adam.step
    assert printed.returncode == 0, printed.stderr
    assert "finite differences" in printed.stderr
    out = printed.stdout
    for step in range(1, 21):
        assert f"[{step}] " in out, step
    for name in ("a1 = x @ W1 + b1", "dl = (p - x) / B", "dW2 = h1.T @ dh", "dh via KL", "dW1 = x.T @ da1"):
        assert name in out
    assert out.count("W1[") == 6 and "m_hat" in out and "v_hat" in out     # the Adam table


def test_page_holds_the_printed_block_verbatim(printed):
    with open(PAGE, encoding="utf-8") as f:
        block = load_script().page_block(f.read())
    assert block is not None, "docs/derivation.md lost its worked-example markers"
    assert block == printed.stdout, (
        "docs/derivation.md's worked example differs from what the code computes, at "
        + first_difference(block, printed.stdout)
        + "\nregenerate it with: python examples/worked_example.py --update docs/derivation.md")


def test_update_rewrites_the_block_and_nothing_else(tmp_path, capsys):
    script = load_script()
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nbefore\n\n{script.BEGIN}\nstale 1.234\n{script.END}\n\nafter\n", encoding="utf-8")
    assert script.main(["--update", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    block, failures = script.markdown()
    assert failures == []
    assert text == f"# Title\n\nbefore\n\n{script.BEGIN}\n{block}{script.END}\n\nafter\n"

    page.write_text("no markers here\n", encoding="utf-8")
    with pytest.raises(InputError, match="markers"):
        script.main(["--update", str(page)])
    assert page.read_text(encoding="utf-8") == "no markers here\n"


def test_update_keeps_a_pages_windows_line_endings(tmp_path):
    """A page checked out with CRLF line endings was written back with LF on every line: the whole
    page changed, not its block."""
    script = load_script()
    page = tmp_path / "page.md"
    page.write_bytes(f"# Title\r\n\r\n{script.BEGIN}\r\nstale\r\n{script.END}\r\nafter\r\n".encode())
    assert script.main(["--update", str(page)]) == 0
    block, _ = script.markdown()
    want = f"# Title\n\n{script.BEGIN}\n{block}{script.END}\nafter\n"
    assert page.read_bytes() == want.replace("\n", "\r\n").encode()


@pytest.mark.parametrize("page, words", [
    ("missing.md", "cannot read the page (No such file or directory)"),
    (".", "is a folder; give the Markdown page"),
    ("latin1.md", "cannot read the page (it is not UTF-8 text)"),
    ("plain.md", "must hold the markers once each"),
    ("/dev/zero", "is not a regular file (a device or a pipe)"),        # read whole, it would fill the memory
    ("fifo.md", "is not a regular file (a device or a pipe)"),          # read, it would wait forever
    ("big.md", "is 11.0 MB, not a Markdown page"),
    ("", "argument --update: must name a page (e.g. docs/derivation.md), got ''"),   # --update="$UNSET"
])
def test_a_bad_page_to_update_is_one_line_and_exit_2(tmp_path, page, words):
    (tmp_path / "latin1.md").write_bytes(b"caf\xe9\n")
    (tmp_path / "plain.md").write_text("# no markers here\n")
    os.mkfifo(tmp_path / "fifo.md")
    with open(tmp_path / "big.md", "wb") as f:
        f.truncate(11 * 2 ** 20)
    proc = subprocess.run([sys.executable, SCRIPT, f"--update={tmp_path / page if page else ''}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "plain.md").read_text() == "# no markers here\n"


def test_with_stdout_closed_it_checks_and_says_so_without_an_internal_error():
    """``>&-``: Python has no sys.stdout; the checks run, the status tells (it was "a bug in npvae")."""
    proc = subprocess.run(["sh", "-c", '"$0" "$1" >&-', sys.executable, SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr.startswith("checked: "), proc.stderr


def test_help_says_what_each_exit_status_means(capsys):
    """The docstring's exit status 1 was missing from --help, which showed its first line only."""
    with pytest.raises(SystemExit) as e:
        load_script().main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "exit status:" in out
    assert "  1    a value disagrees" in out and "  2    bad usage: PAGE missing" in out


@pytest.fixture(scope="module")
def script():
    return load_script()


def test_a_planted_gradient_bug_exits_1_and_lists_the_values_on_stderr(script, capsys):
    """The docstring's promise, exit status 1 if a value disagrees, on a slip gradcheck plants;
    the list goes to stderr (under ``> page.md`` it would otherwise land in the page)."""
    from gradcheck.planted import BUGS
    with BUGS["kl_dmu_dropped"][1]():
        assert script.main([]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("worked example: these values disagree:\n  dh via KL: "), err
    assert "checked:" not in err


def test_a_planted_adam_bug_is_a_disagreement(script, capsys):
    """The Adam table is checked against Adam.step too: a bias correction one step ahead is named."""
    from gradcheck.planted import BUGS
    with BUGS["adam_bias_correction_off_by_one"][1]():
        assert script.main([]) == 1
    assert "\n  Adam.step on encoder.0.weight: gives " in capsys.readouterr().err


def test_a_loss_value_off_by_1e_9_is_a_disagreement(script, monkeypatch, capsys):
    """The modules' values are checked against their formulas to 1e-12, not loosely: a
    reconstruction term 1e-9 nats too large (its gradient unchanged) is caught, by name."""
    from npvae.losses import BCEWithLogits
    forward = BCEWithLogits.forward
    monkeypatch.setattr(BCEWithLogits, "forward", lambda self, logits, target: forward(self, logits, target) + 1e-9)
    assert script.main([]) == 1
    assert "\n  recon: the module gives " in capsys.readouterr().err


def test_model_loss_off_by_1e_9_is_a_disagreement(script, monkeypatch, capsys):
    """The walk's total is checked against model.loss (a constant shift: the slopes agree, so
    only this check can see it), to 1e-12 relative: np.isclose's default atol of 1e-8 let 1e-9 pass."""
    from npvae import VAE
    loss = VAE.loss
    monkeypatch.setattr(VAE, "loss", lambda self, *a, **k: loss(self, *a, **k)._replace(
        total=loss(self, *a, **k).total + 1e-9))
    assert script.main([]) == 1
    assert "\n  model.loss gives " in capsys.readouterr().err


def test_a_gradient_off_by_1e_5_is_caught_by_the_finite_differences_too(script, monkeypatch, capsys):
    """Every Dense weight gradient 1e-5 (relative) too large: the central differences, the third
    check, name each layer (their threshold is 1e-7, not a loose one)."""
    from npvae.layers import Dense
    backward = Dense.backward

    def slightly_off(self, grad_out):
        dx = backward(self, grad_out)
        self.weight.grad *= 1 + 1e-5
        return dx
    monkeypatch.setattr(Dense, "backward", slightly_off)
    assert script.main([]) == 1
    err = capsys.readouterr().err
    for name in ("encoder.0.weight", "encoder.2.weight", "decoder.0.weight", "decoder.2.weight"):
        assert f"\n  {name}: finite differences differ from the gradient by " in err, name


def test_update_replaces_the_page_by_a_rename_and_refuses_markers_out_of_order(script, tmp_path):
    """Atomic: the page is a new file renamed into place (a Ctrl-C mid-write leaves the old
    page whole), no temporary file is left; an END before BEGIN is refused, the page untouched."""
    page = tmp_path / "page.md"
    page.write_text(f"before\n{script.BEGIN}\nstale\n{script.END}\nafter\n", encoding="utf-8")
    inode = os.stat(page).st_ino
    script.update_page(str(page), "new block\n")
    assert page.read_text(encoding="utf-8") == f"before\n{script.BEGIN}\nnew block\n{script.END}\nafter\n"
    assert os.stat(page).st_ino != inode and os.listdir(tmp_path) == ["page.md"]

    reversed_page = f"{script.END}\nold\n{script.BEGIN}\n"
    page.write_text(reversed_page, encoding="utf-8")
    assert script.page_block(reversed_page) is None
    with pytest.raises(InputError, match="must hold the markers once each, in order"):
        script.update_page(str(page), "new block\n")
    assert page.read_text(encoding="utf-8") == reversed_page
