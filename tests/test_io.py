"""Atomic saves publish files a teammate can read: the permissions of a plain write under the process umask."""

import os
import stat

import pytest
import torch

from msdm.io import atomic_directory, atomic_file, current_umask, write_json


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
                                          "run.sh": dir_mode}  # executables stay executable


def test_private_files_stay_private(tmp_path, umask):
    umask(0o022)
    with atomic_directory(tmp_path / "study", private=["key.json"]) as tmp:
        (tmp / "key.json").write_text("{}")
        (tmp / "study.json").write_text("{}")
    with atomic_file(tmp_path / "outside_key.json", "w", permissions=0o600) as f:
        f.write("{}")
    assert modes(tmp_path / "study") == {".": 0o755, "key.json": 0o600, "study.json": 0o644}
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
