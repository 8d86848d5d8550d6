"""Atomic saves publish files a teammate can read: the permissions of a plain write under the process umask."""

import os
import stat

import pytest
import torch

from msdm.errors import OutputExistsError
from msdm.io import (
    OUTPUT_MARKER,
    atomic_directory,
    atomic_file,
    check_output_dir,
    claim_output_dir,
    current_umask,
    foreign_files,
    write_json,
    write_output_marker,
)


@pytest.fixture
def umask():
    """Run a test under a chosen umask and restore the previous one."""
    old = os.umask(0o022)
    os.umask(old)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


def modes(root):
    """``{relative path: permission bits}`` of a folder and everything below it."""
    out = {".": stat.S_IMODE(os.stat(root).st_mode)}
    for base, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(base, n)
            out[os.path.relpath(p, root)] = stat.S_IMODE(os.stat(p).st_mode)
    return out


def test_current_umask_reads_without_changing_it(umask):
    umask(0o027)
    assert current_umask() == 0o027
    assert current_umask() == 0o027


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700),
                                                       (0o002, 0o664, 0o775)])
def test_atomic_saves_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    from safetensors.torch import save_file

    umask(mask)
    with atomic_file(tmp_path / "a.bin") as f:
        f.write(b"x")
    write_json(tmp_path / "b.json", {"k": 1})
    with atomic_directory(tmp_path / "folder") as tmp:
        (tmp / "sub").mkdir()
        # safetensors writes its file 0600 whatever the umask: the folder's publish step fixes that too
        save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "w.safetensors"))
        (tmp / "run.sh").write_text("#!/bin/sh\n")
        os.chmod(tmp / "run.sh", 0o700)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == file_mode
    assert modes(tmp_path / "folder") == {".": dir_mode, "sub": dir_mode, "sub/w.safetensors": file_mode,
                                          "run.sh": dir_mode,  # executables stay executable
                                          OUTPUT_MARKER: file_mode}


def test_private_files_stay_private(tmp_path, umask):
    umask(0o022)
    with atomic_directory(tmp_path / "study", private=["key.json"]) as tmp:
        (tmp / "key.json").write_text("{}")
        (tmp / "study.json").write_text("{}")
    with atomic_file(tmp_path / "outside_key.json", "w", permissions=0o600) as f:
        f.write("{}")
    assert modes(tmp_path / "study") == {".": 0o755, "key.json": 0o600, "study.json": 0o644, OUTPUT_MARKER: 0o644}
    assert stat.S_IMODE((tmp_path / "outside_key.json").stat().st_mode) == 0o600


def test_exported_pipeline_lora_and_generated_images_are_readable(tmp_path, umask):
    """The outputs of the issue: an exported pipeline, a LoRA folder, generated images and their manifests."""
    from msdm.cli import main
    from msdm.lora.save import save_model_lora
    from msdm.lora.testing import write_tiny_kandinsky_prior
    from msdm.testing import build_tiny_pipeline, write_tiny_text_encoder

    umask(0o022)
    pipe = build_tiny_pipeline(write_tiny_text_encoder(tmp_path / "te"), resolution=16)
    pipe.save_pretrained(tmp_path / "pipe")
    (tmp_path / "prompts.txt").write_text("a polyp\n")
    assert main(["generate", "--pipeline", str(tmp_path / "pipe"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--num-images", "1", "--steps", "1", "--out", str(tmp_path / "gen"), "--quiet"]) == 0

    from diffusers import PriorTransformer

    from msdm.lora.adapters import add_lora, make_lora_config

    prior = PriorTransformer.from_pretrained(write_tiny_kandinsky_prior(tmp_path / "k"), subfolder="prior")
    add_lora(prior, make_lora_config(2, None, ["to_q", "to_k"], "gaussian"))
    save_model_lora(prior, tmp_path / "lora")
    for folder in ("pipe", "gen", "lora"):
        got = modes(tmp_path / folder)
        bad = {k: oct(v) for k, v in got.items() if v not in (0o644, 0o755)}
        assert not bad, (folder, bad)
        assert any(v == 0o644 for v in got.values())


# ---------------------------------------------------------------- nothing of the user's is deleted
def _user_folder(path):
    path.mkdir()
    (path / "captions.csv").write_text("id,caption\n1,a polyp\n")
    (path / "notes").mkdir()
    (path / "notes" / "todo.txt").write_text("ask the clinician")
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_atomic_directory_never_replaces_what_msdm_did_not_write(tmp_path):
    user = tmp_path / "mine"
    before = _user_folder(user)
    with pytest.raises(OutputExistsError, match="msdm did not write"):
        with atomic_directory(user) as tmp:
            (tmp / "model.safetensors").write_bytes(b"x")
    assert sorted(p.relative_to(user).as_posix() for p in user.rglob("*")) == before
    assert not list(tmp_path.glob(".mine.tmp-*"))  # nothing left behind either
    # a file given as a folder path is refused, not replaced
    (tmp_path / "prompts.txt").write_text("a polyp\n")
    with pytest.raises(OutputExistsError, match="is a file"):
        with atomic_directory(tmp_path / "prompts.txt"):
            pass
    assert (tmp_path / "prompts.txt").read_text() == "a polyp\n"


def test_a_folder_msdm_wrote_is_replaced_until_someone_adds_to_it(tmp_path):
    out = tmp_path / "pipe"
    with atomic_directory(out) as tmp:
        (tmp / "a.json").write_text("1")
    assert foreign_files(out) == []
    with atomic_directory(out) as tmp:  # msdm's own folder: replaced
        (tmp / "b.json").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "b.json"]
    (out / "my-notes.md").write_text("results look good")
    assert foreign_files(out) == ["my-notes.md"]
    with pytest.raises(OutputExistsError, match="my-notes.md"):
        with atomic_directory(out) as tmp:
            (tmp / "c.json").write_text("3")
    assert (out / "my-notes.md").exists() and (out / "b.json").exists()


def test_check_output_dir_is_the_commands_policy(tmp_path):
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    with atomic_directory(tmp_path / "ours") as tmp:
        (tmp / "x").write_text("x")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_dir(tmp_path / "ours")
    check_output_dir(tmp_path / "ours", overwrite=True)
    _user_folder(tmp_path / "mine")
    with pytest.raises(OutputExistsError, match="msdm did not write"):
        check_output_dir(tmp_path / "mine", overwrite=True)
    # a folder written bit by bit: claimed empty, so a killed writer's partial content is msdm's
    claimed = claim_output_dir(tmp_path / "run", writer="test")
    (claimed / "partial.png").write_bytes(b"x")
    assert foreign_files(claimed) == []
    claim_output_dir(claimed, overwrite=True, writer="test")
    assert [p.name for p in claimed.iterdir()] == [OUTPUT_MARKER]
    (claimed / "done.png").write_bytes(b"x")
    write_output_marker(claimed, writer="test")
    (claimed / "added-later.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="added-later.txt"):
        claim_output_dir(claimed, overwrite=True, writer="test")


@pytest.mark.parametrize("target", ["user-folder", "file", "msdm-folder"])
def test_export_refuses_to_delete_what_is_at_out(tmp_path, capsys, target):
    """msdm export --out used to delete whatever --out held (a folder of captions, a prompt file), exit 0."""
    from msdm.cli import main

    out = tmp_path / "out"
    if target == "user-folder":
        before = _user_folder(out)
    elif target == "file":
        out.write_text("Generate an image with a polyp.\n")
    else:
        with atomic_directory(out) as tmp:
            (tmp / "model_index.json").write_text("{}")
    ckpt = tmp_path / "missing.ckpt"  # never read: the target is checked before any work
    assert main(["export", str(ckpt), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msdm export: error: --out") and str(out) in err[0]
    if target == "user-folder":
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == before
        assert main(["export", str(ckpt), "--out", str(out), "--overwrite"]) == 2  # --overwrite does not help
        assert "msdm did not write" in capsys.readouterr().err
    elif target == "file":
        assert out.read_text() == "Generate an image with a polyp.\n"
    else:
        assert "--overwrite" in err[0]
        assert main(["export", str(ckpt), "--out", str(out), "--overwrite"]) == 2  # allowed; then the ckpt is missing
        assert "checkpoint not found" in capsys.readouterr().err
