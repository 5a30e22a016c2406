"""--resume as a user runs it: the run's own settings, refusals that change no byte, a new --out, the same data."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
from cli_util import (ENV, FIGURED, REFERENCE, SAMPLE, SMALL, TRAIN, assert_no_traceback, load_script, run,
                      sample_copy, snapshot, strict_json_lines)

from npvae import cli
from npvae.checkpoint import META_KEY, load_checkpoint
from npvae.data import load_idx_split
from npvae.errors import InputError


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished two-epoch run (784-32-20, batches of 64, on the sample's first 800 images)."""
    out = tmp_path_factory.mktemp("base") / "run"
    proc = run([TRAIN, *FIGURED, *REFERENCE, "--epochs", "2", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def copy_of(tmp_path, base):
    dest = tmp_path / "run"
    shutil.copytree(base, dest)
    return dest


@pytest.fixture(scope="module")
def script():
    return load_script()


def call(script, capsys, args):
    code = cli.run(script.main, args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("flags, now, was", [
    (["--lr", "0.01"], "--lr 0.01", "--lr 0.001"),
    (["--batch-size", "32", "--seed", "3"], "--batch-size 32, --seed 3", "--batch-size 64, --seed 0"),
    (["--hidden-dim", "64"], "--hidden-dim 64", "--hidden-dim 32"),
    (["--binarize"], "--binarize", "no --binarize"),
    (["--dataset", "fashion-mnist"], "--dataset fashion-mnist", "--dataset mnist-test-split"),
    (["--beta", "0.5", "--warmup", "2"], "--beta 0.5, --warmup 2", "--beta 1.0, --warmup 0"),
])
def test_a_differing_flag_is_refused_naming_both_values_and_nothing_changes(copy_of, script, capsys, flags,
                                                                             now, was):
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--resume", str(copy_of / "checkpoint.npz"), "--epochs", "3", *flags])
    assert code == 2 and err.startswith("error: cannot resume"), err
    assert f"with {now}: the run was trained with {was}" in err and "--epochs" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(copy_of) == before


def test_fewer_epochs_than_done_is_refused(copy_of, script, capsys):
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--resume", str(copy_of), "--epochs", "1"])
    assert code == 2 and "--epochs 1 is the total number of epochs" in err and "--epochs 2 or more" in err, err
    assert snapshot(copy_of) == before


def test_a_resume_into_an_out_that_cannot_be_made_names_out(copy_of, script, capsys, tmp_path):
    """--out given: its refusal names --out and says to choose another, not "the run's folder"."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "new"
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--resume", str(copy_of), "--out", str(out), "--epochs", "3"])
    assert code == 2 and f"--out {out} cannot be created: {tmp_path / 'afile'} is a file" in err, err
    assert "choose another folder" in err and "the run's folder" not in err, err
    assert snapshot(copy_of) == before


def test_resuming_a_finished_run_redraws_its_figures(copy_of, script, capsys):
    os.remove(copy_of / "samples.png")
    record = json.loads((copy_of / "run.json").read_text())
    (copy_of / "run.json").write_text(json.dumps({**record, "lr": 0.01}))      # edited by hand, say
    code, err = call(script, capsys, ["--resume", str(copy_of), "--lr", "0.001", "--nll-k", "1", "--nll-images", "50"])
    assert "run.json says lr 0.01, but the checkpoint was trained with 0.001: continuing with 0.001" in err, err
    assert code == 0, err                        # a flag equal to the run's own is fine, and the NLL's may change
    assert "has done its 2 epochs: drawing its figures" in err
    assert (copy_of / "samples.png").exists() and load_checkpoint(copy_of / "checkpoint.npz").epoch == 2
    records = strict_json_lines(copy_of / "metrics.jsonl")
    assert records[-1]["nll_k"] == 1 and records[-1]["nll_images"] == 50        # the new summary,
    assert [r.get("epoch") for r in records if not r.get("summary")] == [1, 2]  # the epochs once,
    assert sum(bool(r.get("summary")) for r in records) == 1                    # the old one gone


def test_a_resume_goes_on_with_the_runs_own_back_end(tmp_path, script, capsys, monkeypatch):
    """A run started under NPVAE_BACKEND=numpy without --backend, resumed where the variable is
    not set, went on with numba without a word (not to the last bit), and its checkpoint then said
    numba. run.json now holds the back end the run is on; the checkpoint's, the latest, comes
    first (a run.json written before said null)."""
    out = tmp_path / "run"
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    code, err = call(script, capsys, [*SMALL, "--epochs", "1", "--nll-images", "20", "--out", str(out)])
    assert code == 0 and "backend numpy" in err, err
    assert json.loads((out / "run.json").read_text())["backend"] == "numpy"
    monkeypatch.delenv("NPVAE_BACKEND")
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "backend": "numba"}))    # the checkpoint disagrees
    code, err = call(script, capsys, ["--no-figures", "--resume", str(out), "--epochs", "2", "--nll-images", "20"])
    assert code == 0 and "backend numpy" in err, err
    assert load_checkpoint(out / "checkpoint.npz").fit_config["backend"] == "numpy"
    with monkeypatch.context() as without_numba:
        without_numba.setitem(sys.modules, "numba", None)
        code, err = call(script, capsys, ["--no-figures", "--resume", str(out), "--epochs", "3", "--backend", "numba"])
    assert code == 2 and "--backend numba needs Numba" in err and err.rstrip().endswith("--backend numpy"), err
    code, err = call(script, capsys, ["--no-figures", "--resume", str(out), "--epochs", "3", "--nll-images", "20",
                                      "--backend", "numba"])
    assert code == 0 and "backend numba" in err, err             # a flag still changes it
    assert json.loads((out / "run.json").read_text())["backend"] == "numba"


def test_a_run_that_records_no_back_end_says_which_it_goes_on_with(tmp_path, script, capsys, monkeypatch):
    """An older npvae's run.json said "backend": null unless --backend was given, and its checkpoint
    said nothing: "a resume keeps the run's back end" cannot hold, so the resume says what it does."""
    out = tmp_path / "run"
    code, err = call(script, capsys, [*SMALL, "--epochs", "1", "--nll-images", "20", "--out", str(out),
                                      "--backend", "numpy"])
    assert code == 0, err
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "backend": None}))
    with np.load(out / "checkpoint.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays[META_KEY][()]))
    del meta["fit_config"]["backend"]
    np.savez(out / "checkpoint.npz", **{**arrays, META_KEY: np.array(json.dumps(meta))})
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    code, err = call(script, capsys, ["--no-figures", "--resume", str(out), "--epochs", "2", "--nll-images", "20"])
    assert code == 0 and "note: the run records no back end (an older npvae made it): it goes on with numpy; " \
                         "choose with --backend" in err, err
    code, err = call(script, capsys, ["--no-figures", "--resume", str(out), "--epochs", "3", "--nll-images", "20"])
    assert code == 0 and "records no back end" not in err, err             # it does now


def test_the_no_back_end_note_is_left_out_of_a_fresh_run_and_of_a_resume_given_backend(tmp_path, script, capsys,
                                                                                     monkeypatch):
    """The note is for a resume that has to choose: a fresh run chooses as always, and --backend
    is the choice the note would ask for."""
    out = tmp_path / "run"
    monkeypatch.setenv("NPVAE_BACKEND", "numpy")
    code, err = call(script, capsys, [*SMALL, "--epochs", "1", "--nll-images", "20", "--out", str(out)])
    assert code == 0 and "backend numpy" in err and "records no back end" not in err, err
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "backend": None}))          # as an older npvae left it
    with np.load(out / "checkpoint.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays[META_KEY][()]))
    del meta["fit_config"]["backend"]
    np.savez(out / "checkpoint.npz", **{**arrays, META_KEY: np.array(json.dumps(meta))})
    code, err = call(script, capsys, ["--no-figures", "--resume", str(out), "--epochs", "2", "--nll-images", "20",
                                      "--backend", "numpy"])
    assert code == 0 and "backend numpy" in err and "records no back end" not in err, err


def test_other_data_of_the_same_size_are_refused(copy_of, tmp_path, script, capsys):
    images, labels = load_idx_split(SAMPLE, "t10k")
    images = images.reshape(-1, 28, 28).copy()
    images[3, 14, 14] ^= 1                         # one pixel of one training image
    other = sample_copy(tmp_path / "other", images=images)
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), "--epochs", "3", "--data-dir", other])
    assert code == 2, err
    assert "these are not the train images it was trained on" in err and other in err and SAMPLE in err
    run_json = json.loads((copy_of / "run.json").read_text())
    assert run_json["data"]["train_fingerprint"][:12] in err
    assert snapshot(copy_of) == before
    # the same data elsewhere are fine (--data-dir may change)
    same = sample_copy(tmp_path / "same")
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), "--data-dir", same, "--nll-k", "1"])
    assert code == 0, err


def test_a_run_from_before_data_fingerprints_resumes_with_one_note(copy_of, script, capsys):
    record = json.loads((copy_of / "run.json").read_text())
    del record["data"]
    (copy_of / "run.json").write_text(json.dumps(record))
    with np.load(copy_of / "checkpoint.npz") as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__meta__"][()]))
    del meta["fit_config"]["train_data"]
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(copy_of / "checkpoint.npz", **arrays)
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), "--epochs", "3", "--nll-k", "1"])
    assert code == 0, err
    assert "has no fingerprint of the run's data, so the images cannot be checked against the run's" in err
    assert "fingerprint" not in err.replace("has no fingerprint of the run's data", ""), err   # said once


def test_a_run_whose_data_folder_has_gone_says_to_give_the_new_one(copy_of, tmp_path, script, capsys):
    """The folder comes from run.json, not from a flag: leaving --data-dir out would not help."""
    run_json = json.loads((copy_of / "run.json").read_text())
    gone = str(tmp_path / "moved-away")
    (copy_of / "run.json").write_text(json.dumps({**run_json, "data_dir": gone}))
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), "--epochs", "3"])
    assert code == 2 and f"the mnist files are not found in its data folder {gone} (from its run.json):" in err, err
    assert f"  2. {gone} (run.json's data_dir): folder does not exist" in err
    assert "give --data-dir with the folder that holds the run's data" in err and "leave it out" not in err
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), "--epochs", "3", "--data-dir", gone])
    assert code == 2 and f"the mnist files are not found in --data-dir {gone}:" in err and "leave it out" not in err
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), "--epochs", "3", "--data-dir", SAMPLE,
                                      "--nll-k", "1"])
    assert code == 0, err


def test_resume_into_a_new_folder_leaves_the_old_one_untouched(copy_of, tmp_path, script, capsys):
    before = snapshot(copy_of)
    new = tmp_path / "continued"
    code, err = call(script, capsys, ["--resume", str(copy_of / "checkpoint.npz"), "--out", str(new), "--epochs", "3",
                                      "--batch-size", "64"])           # the same value: accepted
    assert code == 0, err
    assert snapshot(copy_of) == before
    records = strict_json_lines(new / "metrics.jsonl")
    assert [r.get("epoch") for r in records[:-1]] == [1, 2, 3] and records[-1]["summary"]
    settings = json.loads((new / "run.json").read_text())
    assert settings["hidden_dim"] == 32 and settings["epochs"] == 3 and settings["split"] == 800
    ckpt = load_checkpoint(new / "checkpoint.npz")
    assert ckpt.epoch == 3 and ckpt.model_config["hidden_dims"] == [32]
    assert "reconstruction_before.png" in os.listdir(new) and "continuing the run of" in err


def test_resume_into_a_folder_holding_another_run_is_refused(copy_of, tmp_path, base):
    other = tmp_path / "other"
    shutil.copytree(base, other)
    before = snapshot(other)
    proc = run([TRAIN, "--resume", str(copy_of), "--out", str(other), "--epochs", "3"])
    assert proc.returncode == 2 and "already holds a run" in proc.stderr, proc.stderr
    assert snapshot(other) == before


def test_resuming_a_checkpoint_copied_into_another_runs_folder_is_refused(copy_of, base):
    """Its folder (the default --out) holds a run of its own, which continuing there would replace."""
    shutil.copy(base / "checkpoint.npz", copy_of / "other.npz")
    before = snapshot(copy_of)
    proc = run([TRAIN, "--resume", str(copy_of / "other.npz"), "--epochs", "3"])
    assert proc.returncode == 2 and "holds another checkpoint" in proc.stderr and "--out NEW" in proc.stderr, proc.stderr
    assert_no_traceback(proc.stderr)
    assert snapshot(copy_of) == before


def test_a_checkpoint_copied_alone_under_another_name_resumes_in_its_folder_again_and_again(tmp_path, base, script,
                                                                                             capsys):
    """Its first resume writes the run's files beside it; the next resume there continues them
    (it used to call them "an earlier run" and tell the user to remove them)."""
    folder = tmp_path / "copy"
    folder.mkdir()
    shutil.copy(base / "checkpoint.npz", folder / "mine.npz")
    flags = [*SMALL, *REFERENCE, "--nll-images", "20", "--no-progress"]
    code, err = call(script, capsys, ["--resume", str(folder / "mine.npz"), *flags, "--epochs", "3"])
    assert code == 0, err
    assert load_checkpoint(folder / "checkpoint.npz").epoch == 3       # the run's own, written beside the copy
    code, err = call(script, capsys, ["--resume", str(folder / "mine.npz"), *flags, "--epochs", "4"])  # back to 2?
    assert code == 2 and f"continue that one with --resume {folder}" in err, err
    code, err = call(script, capsys, ["--resume", str(folder), *flags, "--epochs", "4"])
    assert code == 0, err
    assert load_checkpoint(folder / "checkpoint.npz").epoch == 4


@pytest.mark.parametrize("with_run_json", [True, False], ids=["run.json", "no run.json"])
def test_a_refusal_from_fit_leaves_the_run_folder_as_it_was(copy_of, with_run_json):
    """A checkpoint whose record fit refuses (not caught before): the run folder is left as it was."""
    if not with_run_json:
        os.remove(copy_of / "run.json")
    with np.load(copy_of / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__meta__"]))
    meta["dead_units"] = {"retired": [10 ** 6], "candidates": [], "live": []}
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(copy_of / "checkpoint.npz", **arrays)
    before = snapshot(copy_of)
    # the fast path reads the dead-unit record (the reference has no use for it)
    proc = run([TRAIN, "--resume", str(copy_of), "--epochs", "3", "--nll-images", "20", "--backend", "numba",
                *SMALL[:6]])
    assert proc.returncode == 2 and "dead_units" in proc.stderr, proc.stderr
    assert_no_traceback(proc.stderr)
    assert snapshot(copy_of) == before


def test_a_checkpoint_renamed_in_its_own_folder_resumes_there(copy_of, script, capsys):
    os.rename(copy_of / "checkpoint.npz", copy_of / "mine.npz")
    code, err = call(script, capsys, ["--resume", str(copy_of / "mine.npz"), *SMALL, *REFERENCE, "--nll-images", "20",
                                      "--epochs", "3"])
    assert code == 0, err
    assert load_checkpoint(copy_of / "checkpoint.npz").epoch == 3


def test_a_resume_of_an_older_copy_in_a_run_folder_points_at_the_folder_itself(copy_of):
    shutil.copy(copy_of / "checkpoint.npz", copy_of / "mine.npz")
    proc = run([TRAIN, "--resume", str(copy_of / "mine.npz"), "--epochs", "3"])
    assert proc.returncode == 2, proc.stderr
    assert f"continue that one with --resume {copy_of}, or this one in a folder of its own" in proc.stderr


def test_a_run_whose_checkpoint_was_removed_after_an_epoch_is_not_taken_for_leftovers(copy_of):
    """Its metrics.jsonl holds epochs: results worth keeping, unlike what a first-epoch kill leaves."""
    for name in os.listdir(copy_of):
        if name not in ("run.json", "metrics.jsonl", "reconstruction_before.png"):
            os.remove(copy_of / name)
    before = snapshot(copy_of)
    proc = run([TRAIN, *SMALL, *REFERENCE, "--epochs", "1", "--out", str(copy_of)])
    assert proc.returncode == 2 and "holds files of an earlier run" in proc.stderr, proc.stderr
    assert snapshot(copy_of) == before


def test_a_folder_where_a_figure_goes_is_refused_before_the_resume_not_after_it(copy_of):
    """Found after training, it said "give a file path" (none was given), and so did the resume it offered."""
    os.remove(copy_of / "loss.png")
    os.mkdir(copy_of / "loss.png")
    before = snapshot(copy_of)
    proc = run([TRAIN, "--resume", str(copy_of), "--epochs", "3"])
    assert proc.returncode == 2, proc.stderr
    assert f"the run's folder {copy_of}: loss.png there is a folder, where this writes a file; remove it" in proc.stderr
    assert "epoch 3/3" not in proc.stderr and snapshot(copy_of) == before


def test_an_interrupt_wrapped_by_an_import_while_drawing_still_says_how_to_finish(tmp_path, script, capsys,
                                                                                  monkeypatch):
    """matplotlib is imported when the figures are drawn: a Ctrl-C there comes out as an ImportError."""
    def draw(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization of _path raised unreported exception")
    monkeypatch.setattr(script, "draw_figures", draw)
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == cli.EXIT_SIGINT and err.count("stopped: interrupted by SIGINT") == 1, err
    assert "the training is complete and saved in" in err and "--resume" in err


def test_a_refusal_after_training_keeps_the_run_and_says_how_to_finish(tmp_path, script, capsys, monkeypatch):
    """An error found once fit has returned (a figure's path made a folder meanwhile, too little memory
    for the NLL) is not a refused start: the trained run stays, with the command that finishes it."""
    out = tmp_path / "run"
    def draw(*args):
        raise InputError(f"cannot write {out / 'samples.png'}: it is a folder; give a file path")
    monkeypatch.setattr(script, "draw_figures", draw)
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--out", str(out)])
    assert code == cli.EXIT_USAGE and "it is a folder" in err, err
    assert {"checkpoint.npz", "metrics.jsonl", "run.json"} <= set(os.listdir(out))
    assert "the training is complete and saved in" in err and "--resume" in err
    monkeypatch.undo()
    code = cli.run(script.main, ["--resume", str(out), "--nll-k", "1"])
    assert code == 0 and "done: figures, metrics and checkpoint" in capsys.readouterr().out


def test_a_refusal_in_the_middle_of_training_keeps_what_was_trained(tmp_path, script, capsys, monkeypatch):
    """fit refuses a write after its first checkpoint (metrics.jsonl made a folder meanwhile, say):
    a status-2 error, but not a refused start, so the checkpoint stays, with the command to go on."""
    real_fit = script.fit
    def fit_then_refuse(*args, **kwargs):
        real_fit(*args, **kwargs)
        raise InputError("cannot write metrics.jsonl: it is a folder; give a file path")
    monkeypatch.setattr(script, "fit", fit_then_refuse)
    out = tmp_path / "run"
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "1", "--out", str(out)])
    assert code == cli.EXIT_USAGE and "it is a folder" in err, err
    assert {"checkpoint.npz", "run.json"} <= set(os.listdir(out)) and "--resume" in err


def test_out_of_memory_in_the_nll_after_training_says_how_to_finish_with_the_runs_checkpoint(tmp_path, script,
                                                                                               capsys, monkeypatch):
    def evaluate(*args):
        raise MemoryError()
    monkeypatch.setattr(script, "evaluate", evaluate)
    out = tmp_path / "run"
    code, err = call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "1", "--out", str(out)])
    assert code == 1 and "error: out of memory" in err
    assert f"the training is complete and saved in {out / 'checkpoint.npz'}; to compute the NLL once" in err
    assert err.rstrip().endswith(f"--resume {out / 'checkpoint.npz'} --no-figures"), err    # as this run did


def test_a_library_that_cannot_load_after_training_is_not_called_a_bug_and_says_how_to_finish(tmp_path, script,
                                                                                                capsys, monkeypatch):
    """Under ulimit -v, matplotlib's compiled part may fail to map when the figures are drawn."""
    def draw(*args):
        raise ImportError("ft2font.so: failed to map segment from shared object", name="matplotlib.ft2font")
    monkeypatch.setattr(script, "draw_figures", draw)
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--out", str(tmp_path / "run")])
    assert code == 1 and "\nerror: cannot import matplotlib.ft2font: ft2font.so: failed to map" in err, err
    assert "bug in npvae" not in err and "the training is complete and saved in" in err and "--resume" in err


def test_any_error_after_training_says_the_run_is_saved_and_how_to_finish(tmp_path, script, capsys, monkeypatch):
    """Not only the errors npvae foresees (a library's ValueError as the figures are drawn, say):
    the trained run is kept whatever the error."""
    def draw(*args):
        raise ValueError("an error nobody foresaw")
    monkeypatch.setattr(script, "draw_figures", draw)
    out = tmp_path / "run"
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--out", str(out)])
    assert code == 1 and "an error nobody foresaw" in err, err
    assert f"the training is complete and saved in {out / 'checkpoint.npz'};" in err
    assert script.resume_command(str(out / "checkpoint.npz")) in err, err


def test_an_mplbackend_matplotlib_cannot_import_with_is_named_after_training_and_the_run_kept(tmp_path):
    """matplotlib checks $MPLBACKEND as it is imported, when the figures are drawn; npvae needs no backend."""
    out = tmp_path / "run"
    proc = run([TRAIN, *FIGURED, *REFERENCE, "--epochs", "1", "--out", str(out)],
               env={**ENV, "MPLBACKEND": "nonsense"})
    assert proc.returncode == 2, proc.stderr
    assert "error: matplotlib cannot be imported with MPLBACKEND='nonsense': " in proc.stderr
    assert "unset MPLBACKEND or set it to agg\nthe training is complete and saved in" in proc.stderr
    assert_no_traceback(proc.stderr)
    assert run([TRAIN, "--resume", str(out), "--nll-images", "20"]).returncode == 0       # once that is fixed
    assert (out / "samples.png").exists()


def test_data_found_through_a_relative_npvae_data_dir_is_recorded_in_full_and_named_on_a_failed_resume(
        tmp_path, script, capsys, monkeypatch):
    """run.json records where the data were as a full path; resumed from elsewhere, where the
    relative $NPVAE_DATA_DIR finds nothing, the refusal says where the run found them."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    shutil.copytree(SAMPLE, here / "rel" / "mnist")
    elsewhere.mkdir()
    no_data_dir = [a for a in SMALL if a not in ("--data-dir", SAMPLE)]
    monkeypatch.setenv("NPVAE_DATA_DIR", "rel")             # read when the data are looked for
    monkeypatch.chdir(here)
    code, err = call(script, capsys, [*no_data_dir, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--out", "run"])
    assert code == 0, err
    with open(here / "run" / "run.json", encoding="utf-8") as f:
        assert json.load(f)["data"]["source"] == str(here / "rel" / "mnist")
    monkeypatch.chdir(elsewhere)
    code, err = call(script, capsys, ["--no-figures", "--resume", str(here / "run"), "--epochs", "2"])
    assert code == 2, err
    assert f"This run found its data in {here / 'rel' / 'mnist'} (its run.json)" in err
    assert_no_traceback(err)


def test_a_resume_in_a_locale_that_cannot_spell_the_data_folder_says_so(tmp_path, script, capsys):
    """Recorded in a UTF-8 locale (this process's), resumed with PYTHONUTF8=0 LC_ALL=C (cron, a
    fresh process): the folder holds the files; what is wrong is its name in this locale, and the
    refusal says that."""
    from cli_util import ENV
    data = tmp_path / "d\u00e4t\u00e4"
    shutil.copytree(SAMPLE, data)
    args = [a for a in SMALL if a not in ("--data-dir", SAMPLE)]
    code, err = call(script, capsys, [*args, *REFERENCE, "--data-dir", str(data), "--epochs", "1", "--nll-images", "20",
                                      "--out", str(tmp_path / "run")])
    assert code == 0, err
    again = run([TRAIN, "--no-figures", "--resume", str(tmp_path / "run"), "--epochs", "2"],
                env={**ENV, "PYTHONUTF8": "0", "LC_ALL": "C"})
    assert again.returncode == 2, again.stderr
    assert "the mnist files are not found in its data folder" in again.stderr
    assert "its name cannot be spelled in this locale's encoding of file names (ascii)" in again.stderr
    assert_no_traceback(again.stderr)


def test_the_resume_command_printed_pastes_back_for_a_folder_with_a_space(tmp_path, script, capsys, monkeypatch):
    import shlex

    def draw(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(script, "draw_figures", draw)
    out = tmp_path / "my run"
    code, err = call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--out", str(out)])
    assert code == cli.EXIT_SIGINT, err
    assert shlex.split(err.strip().splitlines()[-1])[1:] == [sys.argv[0], "--resume", str(out / "checkpoint.npz")]


def test_a_run_without_run_json_resumes_with_one_note_that_names_it_missing(copy_of, tmp_path, script, capsys):
    """Not a second note blaming a run.json that is not there for having no fingerprint. The
    training images are still checked, by the checkpoint's record of them, before anything is written."""
    (copy_of / "run.json").unlink()
    images, _ = load_idx_split(SAMPLE, "t10k")
    images = images.reshape(-1, 28, 28).copy()
    images[3, 14, 14] ^= 1                         # one pixel of one training image
    other = sample_copy(tmp_path / "other", images=images)
    before = snapshot(copy_of)
    data = ["--dataset", "mnist-test-split", "--split", "800"]          # run.json had them
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), *data, "--data-dir", other,
                                      "--epochs", "3"])
    assert code == 2 and "these are not the train images it was trained on" in err, err
    assert "point --data-dir at the run's data" in err and "writing to" not in err, err
    assert snapshot(copy_of) == before
    code, err = call(script, capsys, ["--no-figures", "--resume", str(copy_of), *data, "--data-dir", SAMPLE,
                                      "--epochs", "3", "--nll-k", "1"])
    assert code == 0, err
    assert "no run.json beside" in err and "the held-out images cannot be checked" in err, err
    assert "run.json has no fingerprint" not in err, err
    assert "--seed" not in err and json.loads((copy_of / "run.json").read_text())["seed"] == 0, err  # its checkpoint's
    (copy_of / "run.json").unlink()
    code, err = call(script, capsys, ["--resume", str(copy_of), "--dataset", "mnist-test-split", "--split", "700",
                                      "--data-dir", SAMPLE, "--epochs", "4"])     # another split: said how to fix
    assert code == 2 and "trained on 800 images, but these data have 700" in err, err
    assert "(without its run.json: or give its --dataset and, for mnist-test-split, --split)" in err, err


def test_a_run_without_run_json_goes_on_with_what_its_checkpoint_was_trained_with(tmp_path, script, capsys,
                                                                                    monkeypatch):
    """Without run.json the model's size, --lr and --beta come from the checkpoint, not the defaults:
    a model of another size cannot load it, another beta cannot resume it, and the run.json the
    resume writes says the rate that trains (and the data folder in full, to be found from anywhere)."""
    out = tmp_path / "run"
    monkeypatch.chdir(os.path.dirname(SAMPLE))
    data = ["--dataset", "mnist-test-split", "--data-dir", os.path.basename(SAMPLE), "--split", "800"]
    trained = dict(hidden_dim=16, latent_dim=3, lr=0.002, beta=0.5)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in trained.items()]
    nll = ["--nll-k", "1", "--nll-images", "10"]
    code, err = call(script, capsys, [*data, *REFERENCE, *flags, "--epochs", "1", *nll, "--out", str(out)])
    assert code == 0, err
    (out / "run.json").unlink()
    code, err = call(script, capsys, ["--no-figures", "--resume", str(out), *data, "--epochs", "2", *nll])
    assert code == 0 and "model: 784-16-3" in err, err
    saved = json.loads((out / "run.json").read_text())
    assert {k: saved[k] for k in trained} == trained and saved["data_dir"] == SAMPLE


@pytest.mark.parametrize("damage, words", [
    (lambda r: json.dumps({**r, "seed": None}), "holds a setting no run can have (argument --seed: "),
    (lambda r: json.dumps([r]), "does not hold the run's settings (a JSON object)"),
    (lambda r: json.dumps(r)[:-9], "cannot be read ("),
], ids=["null seed", "a list", "cut short"])
def test_a_run_json_that_holds_no_runs_settings_is_refused_and_nothing_changes(copy_of, script, capsys, damage,
                                                                                 words):
    (copy_of / "run.json").write_text(damage(json.loads((copy_of / "run.json").read_text())))
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--resume", str(copy_of), "--epochs", "3"])
    assert code == 2 and err.startswith("error: ") and words in err and "restore" in err, err
    assert snapshot(copy_of) == before


def test_a_run_json_whose_data_record_is_not_one_is_checked_by_the_checkpoints_record(copy_of, tmp_path, script,
                                                                                       capsys):
    record = json.loads((copy_of / "run.json").read_text())
    (copy_of / "run.json").write_text(json.dumps({**record, "data": "lost"}))
    images = load_idx_split(SAMPLE, "t10k")[0].reshape(-1, 28, 28).copy()
    images[3, 14, 14] ^= 1                         # one pixel of one training image
    other = sample_copy(tmp_path / "other", images=images)
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--resume", str(copy_of), "--data-dir", other, "--epochs", "3"])
    assert code == 2 and "run.json has no fingerprint of the run's data" in err, err
    assert "these are not the train images it was trained on" in err, err
    assert snapshot(copy_of) == before


def test_a_float64_run_made_in_python_is_refused_before_the_data_are_loaded(tmp_path, script, capsys):
    """The program trains float32 models: it says so, and where such a run can go on."""
    import npvae
    images, _ = load_idx_split(SAMPLE, "t10k")
    folder = tmp_path / "run64"
    folder.mkdir()
    npvae.fit(npvae.VAE(784, 8, 2, dtype=np.float64, rng=0), images[:800], epochs=1, batch_size=64, rng=0,
              progress=False, backend="numpy", checkpoint=folder / "checkpoint.npz")
    before = snapshot(folder)
    code, err = call(script, capsys, ["--resume", str(folder), "--dataset", "mnist-test-split", "--data-dir",
                                      SAMPLE, "--split", "800", "--epochs", "2"])
    assert code == 2, err
    assert "holds a float64 model; this program trains float32 models" in err and "npvae.fit" in err, err
    assert "writing to" not in err and "training images" not in err, err
    assert snapshot(folder) == before


def test_a_run_json_data_record_without_the_test_images_fingerprint_is_refused(copy_of, script, capsys):
    """Only the checkpoint's own record (no run.json at all) leaves the held-out images unchecked;
    a run.json record that lost one of its fingerprints does not match these data."""
    record = json.loads((copy_of / "run.json").read_text())
    del record["data"]["test_fingerprint"]
    (copy_of / "run.json").write_text(json.dumps(record))
    before = snapshot(copy_of)
    code, err = call(script, capsys, ["--resume", str(copy_of), "--epochs", "3"])
    assert code == 2 and "these are not the test images it was trained on" in err, err
    assert snapshot(copy_of) == before


def test_no_figures_on_a_resume_leaves_the_runs_figures_as_they_are_and_says_so(copy_of, script, capsys):
    """Said when they are older than the checkpoint: not after a resume that trained nothing."""
    drawn = {name: (copy_of / name).read_bytes() for name in os.listdir(copy_of) if name.endswith(".png")}
    code, err = call(script, capsys, ["--resume", str(copy_of), "--no-figures", "--nll-images", "20"])
    assert code == 0 and "has done its 2 epochs" in err and "--no-figures:" not in err, err
    code, err = call(script, capsys, ["--resume", str(copy_of), "--epochs", "3", "--no-figures", "--nll-images", "20"])
    assert code == 0, err
    assert (f"note: --no-figures: reconstruction_after.png, samples.png, interpolation.png, loss.png, latent.png in "
            f"{copy_of} are left as drawn before; a resume without --no-figures draws them after epoch 3") in err
    assert {name: (copy_of / name).read_bytes() for name in drawn} == drawn and len(drawn) == 6


def test_a_run_without_run_json_draws_the_untrained_model_only_from_the_seed_its_checkpoint_was_started_from(
        tmp_path, script, capsys):
    """Without run.json the checkpoint tells the run's seed (its model's stream keeps the increment the
    seed gave it): a guessed --seed 0 that is not it is not recorded, nor is that model drawn; a wrong
    --seed is refused; the right one draws it. A run of seed 0 needs no --seed."""
    data = ["--dataset", "mnist-test-split", "--split", "800", "--data-dir", SAMPLE, "--nll-images", "20",
            "--nll-k", "2"]
    for seed in ("0", "3"):
        out = tmp_path / seed
        assert call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--seed", seed,
                                     "--out", str(out)])[0] == 0
        (out / "run.json").unlink()
        code, err = call(script, capsys, ["--resume", str(out), *data])
        assert code == 0, err
        # both draw from the seed: not from a guessed one (samples.png once came from default_rng(0))
        assert (out / "reconstruction_before.png").exists() == (seed == "0"), err
        assert (out / "samples.png").exists() == (seed == "0"), err
        assert ("seed" in json.loads((out / "run.json").read_text())) == (seed == "0")
    assert ("note: the run's --seed is not known (its checkpoint was not started from --seed 0, the default): "
            "samples.png (drawn from the seed) and reconstruction_before.png (the untrained model's) are not drawn; "
            "give --seed if it had one") in err, err
    code, err = call(script, capsys, ["--resume", str(out), *data, "--seed", "4"])
    assert code == 2 and f"--seed 4 is not the seed of {out / 'checkpoint.npz'}" in err, err
    code, err = call(script, capsys, ["--resume", str(out), *data, "--seed", "3", "--epochs", "2"])
    assert code == 0 and (out / "reconstruction_before.png").exists(), err
    # samples.png as a run of --seed 3 draws it: the same 64 latent draws
    same = tmp_path / "same"
    assert call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "2", "--nll-images", "20", "--seed", "3",
                                 "--out", str(same)])[0] == 0
    assert (out / "samples.png").read_bytes() == (same / "samples.png").read_bytes()


def test_a_seed_in_run_json_that_the_checkpoint_was_not_started_from_is_not_taken(tmp_path, script, capsys):
    """run.json edited by hand (or written by an older npvae that guessed --seed 0): the checkpoint decides."""
    out = tmp_path / "run"
    assert call(script, capsys, [*SMALL, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--seed", "3",
                                 "--out", str(out)])[0] == 0
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "seed": 0}))
    code, err = call(script, capsys, ["--resume", str(out), "--seed", "3", "--epochs", "2", "--nll-images", "20"])
    assert code == 0 and "run.json says seed 0, but the checkpoint was not started from it" in err, err
    assert json.loads((out / "run.json").read_text())["seed"] == 3 and (out / "reconstruction_before.png").exists()


def test_a_resume_killed_before_its_first_checkpoint_leaves_more_epochs_in_run_json_and_no_disagreement(
        copy_of, script, capsys):
    """A resume with a larger --epochs records it in run.json before it trains; killed (kill -9)
    before its first checkpoint, it leaves run.json and the checkpoint differing in epochs alone.
    That is no disagreement to note: the next resume goes on to run.json's total."""
    record = json.loads((copy_of / "run.json").read_text())
    record["epochs"] = 3
    (copy_of / "run.json").write_text(json.dumps(record))
    code, err = call(script, capsys, ["--resume", str(copy_of), "--no-figures", "--no-progress"])
    assert code == 0, err
    assert "run.json says" not in err, err
    assert load_checkpoint(copy_of / "checkpoint.npz").epoch == 3


def test_a_resume_that_does_not_know_the_seed_says_the_samples_there_are_of_an_earlier_epoch(tmp_path, script,
                                                                                             capsys):
    """Its other figures are drawn anew; the samples.png there is left as it was, and the note says so."""
    out = tmp_path / "run"
    assert call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--seed", "3",
                                 "--out", str(out)])[0] == 0
    before = (out / "samples.png").read_bytes()
    (out / "run.json").unlink()
    code, err = call(script, capsys, ["--resume", str(out), "--epochs", "2", "--dataset", "mnist-test-split",
                                      "--split", "800", "--data-dir", SAMPLE, "--nll-images", "20", "--nll-k", "2"])
    assert code == 0, err
    assert ("samples.png (drawn from the seed; the one there is left as drawn before) is not drawn") in err, err
    assert (out / "samples.png").read_bytes() == before


def test_no_figures_on_a_resume_that_does_not_know_the_seed_promises_no_samples_png(tmp_path, script, capsys):
    """A resume without --no-figures would not draw samples.png either (the seed is not known): the
    note on the figures left says it needs the run's --seed."""
    out = tmp_path / "run"
    assert call(script, capsys, [*FIGURED, *REFERENCE, "--epochs", "1", "--nll-images", "20", "--seed", "3",
                                 "--out", str(out)])[0] == 0
    (out / "run.json").unlink()
    code, err = call(script, capsys, ["--resume", str(out), "--epochs", "2", "--dataset", "mnist-test-split",
                                      "--split", "800", "--data-dir", SAMPLE, "--nll-images", "20", "--nll-k", "2",
                                      "--no-figures"])
    assert code == 0, err
    assert ("a resume without --no-figures draws them after epoch 2 (samples.png only if given the run's "
            "--seed)\n") in err, err
