"""Generation folders are never mixed and never silently partial (issue 23): the one challenge-folder writer
(:mod:`msdm.generators.writer`) fingerprints a folder's settings and marks it complete only at the end; a rerun
resumes (same settings), is refused (other settings) or, with ``--overwrite``, replaces only what msdm wrote; a
folder a killed run left is refused by ``msdm evaluate`` (or scored with ``--allow-incomplete`` and a warning)."""

import json

import pytest

from msdm.cli import main
from msdm.errors import OutputExistsError
from msdm.generators import RenderGenerator, write_challenge_folder
from msdm.io import read_output_marker
from msdm.provenance import read_record, verify

PROMPTS = ["Generate an image containing a polyp.", "Generate an image with no polyps."]


class Counting:
    """A real generator (synthetic-scene renders) that counts the images it is asked for and, like a killed
    process, stops for good after ``stop_after`` images."""

    def __init__(self, stop_after=None, resolution=32):
        self.inner, self.calls, self.stop_after = RenderGenerator("follow", resolution), 0, stop_after

    def generate(self, prompts, seeds):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("killed")
        self.calls += len(prompts)
        return self.inner.generate(prompts, seeds)

    def info(self):
        return self.inner.info()


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("prompt*_img*.png"))}


def test_a_killed_run_is_incomplete_and_the_same_run_resumes_it(tmp_path):
    whole = tmp_path / "whole"
    write_challenge_folder(Counting(), PROMPTS, whole, 3, seed=5, batch_size=2)
    assert read_output_marker(whole)["complete"] is True and verify(whole).ok

    out = tmp_path / "gen"
    killed = Counting(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        write_challenge_folder(killed, PROMPTS, out, 3, seed=5, batch_size=2)
    assert read_output_marker(out)["complete"] is False and len(_pngs(out)) == 2
    assert not verify(out).ok  # msdm provenance: incomplete

    again = Counting()
    assert write_challenge_folder(again, PROMPTS, out, 3, seed=5, batch_size=2) == 4
    assert again.calls == 4  # the two images already there were kept, not drawn again
    assert read_output_marker(out)["complete"] is True and verify(out).ok, verify(out).findings
    assert _pngs(out) == _pngs(whole)  # the resumed folder is the uninterrupted one, byte for byte
    assert Counting().calls == 0 and write_challenge_folder(Counting(), PROMPTS, out, 3, seed=5) == 0  # complete


def test_other_settings_are_refused_and_overwrite_replaces_only_msdms_files(tmp_path):
    out = tmp_path / "gen"
    write_challenge_folder(Counting(), PROMPTS, out, 2, seed=0)
    before = _pngs(out)
    with pytest.raises(OutputExistsError, match=r"other settings \(seed 0 → 7"):
        write_challenge_folder(Counting(), PROMPTS, out, 2, seed=7)
    with pytest.raises(OutputExistsError, match="prompts"):
        write_challenge_folder(Counting(), PROMPTS[:1], out, 2, seed=0)
    assert _pngs(out) == before and verify(out).ok  # nothing was written

    n = write_challenge_folder(Counting(), PROMPTS[:1], out, 3, seed=7, overwrite=True)
    assert n == 3 and sorted(_pngs(out)) == [f"prompt0001_img000{i}.png" for i in (1, 2, 3)]
    assert {read_record(p)["seed"] for p in out.glob("*.png")} == {7, 8, 9} and verify(out).ok

    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt"):
        write_challenge_folder(Counting(), PROMPTS, out, 2, seed=0, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and len(_pngs(out)) == 3


def test_a_folder_of_other_files_is_never_written_into(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "caption.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match="caption.txt"):
            write_challenge_folder(Counting(), PROMPTS, out, 1, overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["caption.txt"]


def test_evaluate_refuses_a_partial_folder_in_one_line(tmp_path, capsys):
    out = tmp_path / "gen"
    with pytest.raises(KeyboardInterrupt):
        write_challenge_folder(Counting(stop_after=3), PROMPTS, out, 4, batch_size=3)
    capsys.readouterr()
    assert main(["evaluate", str(out), "--adherence"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "incomplete (3 of 8 images" in err and "--allow-incomplete" in err
    assert not (out / "adherence.json").exists()

    assert main(["evaluate", str(out), "--adherence", "--allow-incomplete"]) == 0
    err = capsys.readouterr().err
    assert "WARNING" in err and "scoring the 3 images present" in err
    assert sum(v["images"] for v in json.loads((out / "adherence.json").read_text())["per_prompt"].values()) == 3


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory, tiny_text_encoder):
    import torch

    from msdm.generators.samplers import make_sampler
    from msdm.models.presets import build_unet, build_vae
    from msdm.models.text_encoder import load_text_encoder, text_hidden_size
    from msdm.pipeline import MSDMPipeline

    torch.manual_seed(0)
    tok, te = load_text_encoder(tiny_text_encoder, max_length=16)
    pipe = MSDMPipeline(vae=build_vae("tiny"), unet=build_unet("tiny", text_hidden_size(te)), text_encoder=te,
                        tokenizer=tok, scheduler=make_sampler("ddim"), resolution=32)
    path = tmp_path_factory.mktemp("pipe") / "tiny-msdm"
    pipe.save_pretrained(path)
    return path


def test_generate_into_a_used_folder_refuses_other_settings(tiny_pipeline, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "gen"
    common = ["generate", "--pipeline", str(tiny_pipeline), "--prompts", str(prompts), "--num-images", "2",
              "--out", str(out)]
    assert main([*common, "--steps", "2"]) == 0
    assert main([*common, "--steps", "2"]) == 0  # the same command: complete already, nothing drawn again
    assert "0 images" in capsys.readouterr().out
    assert main([*common, "--steps", "3"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "msdm" in line]  # not diffusers' loading bars
    assert len(err) == 1 and err[0].startswith("msdm generate: error:") and "steps 2 → 3" in err[0]
    assert "--overwrite" in err[0]
    assert {read_record(p)["steps"] for p in out.glob("*.png")} == {2} and main(["provenance", str(out)]) == 0
    assert main([*common, "--steps", "3", "--overwrite"]) == 0
    assert {read_record(p)["steps"] for p in out.glob("*.png")} == {3} and main(["provenance", str(out)]) == 0


@pytest.mark.parametrize("option, value, words", [
    ("--num-images", "0", "must be a whole number >= 1, got 0"),
    ("--num-images", "-3", "got -3"),
    ("--batch-size", "-1", "got -1"),
    ("--steps", "0", "got 0"),
    ("--guidance-scale", "nan", "a finite number"),
    ("--eta", "-3", "in [0, 1], got -3.0"),
    ("--eta", "1.5", "in [0, 1], got 1.5"),
])
def test_generate_refuses_nonsense_arguments_where_parsed(option, value, words, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--pipeline", str(tmp_path), "--prompts", "p.txt", "--out", str(out), option, value])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert f"argument {option}" in err and words in err and not out.exists()


def test_generate_refuses_a_file_or_a_plain_folder_as_pipeline(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("Generate an image containing a polyp.\n")
    (tmp_path / "notes.txt").write_text("not a pipeline")
    (tmp_path / "plain").mkdir()
    for source, words in ((tmp_path / "notes.txt", "is a file"), (tmp_path / "plain", "without model_index.json")):
        assert main(["generate", "--pipeline", str(source), "--prompts", str(prompts), "--out",
                     str(tmp_path / "out")]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and words in err[0] and "msdm export" in err[0], err
    assert not (tmp_path / "out").exists()
