"""Every input error is refused where it is parsed, in one or two lines, exit 2, naming the value and the fix:
option values (msdm.validation), LightningCLI config values, a CUDA device without a GPU, a full disk."""

import argparse
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from msdm.cli import main
from msdm.errors import InputError, environment_error
from msdm.validation import RULES, arg_type, check_device, check_value, finite_float, positive_int

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name, bad", [("lr", -1), ("lr", 0), ("batch_size", 0), ("batch_size", -1),
                                       ("batch_size", 2.5), ("num_inference_steps", 0), ("guidance_scale", float("nan")),
                                       ("guidance_scale", float("inf")), ("eta", -3), ("eta", 1.5), ("cfg_dropout", 2),
                                       ("num_workers", -1), ("ema_decay", 0), ("batch_size", True)])
def test_rules_refuse_values_that_cannot_work(name, bad):
    with pytest.raises(InputError) as e:
        check_value(name, bad, where=f"--{name}")
    msg = str(e.value)
    assert msg.startswith(f"--{name} must be") and repr(bad) in msg and "\n" not in msg


@pytest.mark.parametrize("name, good", [("lr", 1e-4), ("batch_size", 1), ("batch_size", 8.0), ("guidance_scale", 0.0),
                                        ("eta", 0.0), ("eta", 1), ("cfg_dropout", 0.2), ("num_workers", 0),
                                        ("steps", None)])
def test_rules_accept_what_works(name, good):
    assert check_value(name, good) == good


def test_argparse_types_name_the_value():
    assert positive_int("3") == 3 and finite_float("4.5") == 4.5 and arg_type("eta")("0") == 0.0
    for parse, text in ((positive_int, "0"), (positive_int, "-3"), (positive_int, "two"), (finite_float, "nan"),
                        (arg_type("eta"), "-3"), (arg_type("batch_size"), "-1")):
        with pytest.raises(argparse.ArgumentTypeError, match=repr(text) if text in ("two",) else "must be"):
            parse(text)
    assert set(RULES) >= {"lr", "batch_size", "num_inference_steps", "guidance_scale", "eta"}


def test_an_option_error_is_one_line_without_the_usage(capsys):
    assert main_exit(["export"]) == 2  # a required option missing
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msdm export: error:") and "--out" in err[0] and "usage" not in err[0]


def main_exit(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def _vae_config(tmp_path):
    cfg = {"seed_everything": 0,
           "model": {"class_path": "lightning_modules.MSDMVAEModule", "init_args": {"preset": "tiny", "lr": 1e-3}},
           "data": {"class_path": "datamodules.synthetic.SyntheticGIDataModule",
                    "init_args": {"num_train": 4, "num_val": 2, "resolution": 32, "batch_size": 2}},
           "trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False, "enable_progress_bar": False,
                       "default_root_dir": str(tmp_path / "runs")}}
    path = tmp_path / "vae.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


FIT_ERRORS = [
    ("--data.init_args.batch_size=0", ["--data.init_args.batch_size", "got 0"]),
    ("--model.init_args.lr=-1", ["--model.init_args.lr", "got -1.0"]),
    ("--model.init_args.preset=huge", ["unknown MSDM preset 'huge'", "paper, small, tiny"]),
    ("--trainer.max_steps=-5", ["--trainer.max_steps", "got -5"]),
]


def run_msdm_many(commands: list[list[str]]) -> list[tuple[int, str]]:
    """Run several ``msdm`` command lines in one fresh process (one Lightning import): [(exit status, stderr)]."""
    code = ("import contextlib, io, json, sys\nfrom msdm.cli import main\nout = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        try:\n            rc = main(argv)\n"
            "        except SystemExit as e:\n            rc = e.code\n"
            "    out.append([rc, err.getvalue()])\n"
            "print('RESULT' + json.dumps(out))\n")
    import json

    r = subprocess.run([sys.executable, "-c", code, json.dumps(commands)], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT")), None)
    assert line is not None, r.stderr[-3000:]
    return [tuple(x) for x in json.loads(line[len("RESULT"):])]


def test_fit_input_errors_are_one_line_exit_2(tmp_path):
    cfg = _vae_config(tmp_path)
    results = run_msdm_many([["fit", "-c", cfg, override] for override, _ in FIT_ERRORS])
    for (override, words), (rc, err) in zip(FIT_ERRORS, results):
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("Seed set", "INFO"))]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("msdm fit: error:"), (override, err)
        assert all(w in lines[0] for w in words), (override, lines[0])
    assert not (tmp_path / "runs").exists()  # refused before anything was built or written


def test_cuda_without_a_gpu_is_one_line(tmp_path, capfd):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert main(["fit", "-c", _vae_config(tmp_path), "--trainer.accelerator=cuda"]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("msdm")]
    assert len(err) == 1 and "no CUDA GPU is visible" in err[0] and "cpu" in err[0]
    with pytest.raises(InputError, match="--device cuda:0: no CUDA GPU"):
        check_device("cuda:0")
    check_device("cpu")


def test_a_full_disk_is_named_not_a_traceback():
    """/dev/full answers every write with ENOSPC: a real full disk, no mock."""
    try:
        with open("/dev/full", "w") as f:
            f.write("x" * 10)
            f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC
        assert environment_error(RuntimeError("shapes do not match")) is None  # a bug stays a bug
        wrapped = RuntimeError("could not save the checkpoint")
        wrapped.__cause__ = e
        msg = str(environment_error(wrapped))
        assert msg.startswith("no space left on device writing") and "write elsewhere" in msg
    else:  # pragma: no cover
        pytest.skip("no /dev/full here")


@pytest.mark.slow
def test_fit_on_a_full_disk_is_one_line_exit_2(tmp_path):
    """A real full file system (a 16 KiB tmpfs; needs mount rights, else skipped): the checkpoint does not fit."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        cfg = yaml.safe_load(Path(_vae_config(tmp_path)).read_text())
        cfg["trainer"]["default_root_dir"] = str(mnt)
        cfg["trainer"]["callbacks"] = [{"class_path": "lightning_modules.ResumableCheckpoint",
                                        "init_args": {"dirpath": str(mnt / "ckpt"), "save_last": True}}]
        (tmp_path / "full.yaml").write_text(yaml.safe_dump(cfg))
        r = subprocess.run([sys.executable, "-m", "msdm", "fit", "-c", str(tmp_path / "full.yaml")],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 2, r.stderr[-3000:]
        errors = [line for line in r.stderr.splitlines() if line.startswith("msdm fit: error:")]
        assert len(errors) == 1 and ("no space left" in errors[0] or "disk full" in errors[0]), r.stderr[-3000:]
        assert "Traceback" not in r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_vae_of_another_preset_is_one_line(tmp_path, capfd, tiny_text_encoder):
    """A VAE whose latents the U-Net cannot take (8 channels for the tiny U-Net's 4): one line naming both, exit 2."""
    import lightning.pytorch as pl

    from lightning_modules import MSDMVAEModule

    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(MSDMVAEModule(preset="tiny", vae_overrides={"latent_channels": 8}))
    tr.save_checkpoint(tmp_path / "vae8.ckpt")
    cfg = {"model": {"class_path": "lightning_modules.MSDMUNetModule",
                     "init_args": {"preset": "tiny", "vae": str(tmp_path / "vae8.ckpt"),
                                   "text_encoder": tiny_text_encoder, "max_length": 16}},
           "data": {"class_path": "datamodules.synthetic.SyntheticGIDataModule",
                    "init_args": {"num_train": 4, "num_val": 2, "resolution": 32, "batch_size": 2}},
           "trainer": {"accelerator": "cpu", "max_steps": 1, "logger": False, "default_root_dir": str(tmp_path / "r")}}
    (tmp_path / "u.yaml").write_text(yaml.safe_dump(cfg))
    capfd.readouterr()
    assert main(["fit", "-c", str(tmp_path / "u.yaml")]) == 2
    err = [line for line in capfd.readouterr().err.splitlines() if line.startswith("msdm")]
    assert len(err) == 1 and "8 latent channels" in err[0] and "takes 4" in err[0], err
