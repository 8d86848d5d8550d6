"""Every YAML in configs/ (and cli.yaml) parses against the real class signatures, and means what it says:
``msdm fit -c X --print_config`` shows X's values and otherwise the defaults of Lightning and of X's classes — nothing
from ``cli.yaml``, which applies only when no ``-c`` is given. The scale overlays are checked as they are used,
merged on a base config. Nothing is instantiated, so hub-only weights named in paper configs are not needed."""

from pathlib import Path

import pytest
import yaml

from lightning_modules.cli import MSDMLightningCLI, cli_kwargs, run_lightning_cli

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# overlays as the docs and configs/scale/msdm_unet.sbatch use them: (base, overlay, ...)
OVERLAYS = [
    ("quickstart_unet.yaml", "scale/ddp.yaml"),
    ("msdm_unet_kvasir.yaml", "scale/msdm_unet_fast.yaml"),
    ("msdm_unet_kvasir.yaml", "scale/msdm_unet_fast.yaml", "scale/ddp.yaml"),
    ("msdm_unet_rocov2.yaml", "scale/ddp.yaml"),
    ("flux_lora_kvasir.yaml", "scale/fsdp_flux.yaml"),
    ("kandinsky_lora_decoder_kvasir.yaml", "scale/ddp.yaml"),
]
DOCUMENTED_DATA_SEED = 2204  # docs/data.md: the image-level split seed of the paper configs (the reference's)


class ParseOnly(MSDMLightningCLI):
    def instantiate_classes(self):  # validate the config, build nothing
        pass


def test_there_are_configs_for_every_generator_and_dataset():
    names = {p.stem for p in CONFIGS}
    for n in ("msdm_vae_kvasir", "msdm_unet_kvasir", "msdm_vae_rocov2", "msdm_unet_rocov2", "quickstart_vae",
              "quickstart_unet", "kandinsky_lora_prior_kvasir", "kandinsky_lora_decoder_kvasir", "flux_lora_kvasir"):
        assert n in names


@pytest.mark.parametrize("config", [ROOT / "cli.yaml", *CONFIGS], ids=lambda p: p.name)
def test_config_parses(config):
    args = ["-c", str(config)]
    cli = ParseOnly(**{**cli_kwargs(args), "parser_kwargs": {}}, run=False, args=args, save_config_callback=None)
    assert cli.config.model.class_path.startswith("lightning_modules.")
    assert cli.config.data.class_path.startswith("datamodules.")


# ------------------------------------------------------------------------------------------------ print_config
def _print_config(args, capsys) -> dict:
    with pytest.raises(SystemExit) as exc:
        run_lightning_cli(["fit", *args, "--print_config"])
    assert not exc.value.code
    return yaml.safe_load(capsys.readouterr().out)


def _leaves(obj, prefix=()):
    """``{path: value}``; lists (callbacks) are single leaves."""
    if isinstance(obj, dict) and obj:
        out = {}
        for k, v in obj.items():
            out.update(_leaves(v, (*prefix, k)))
        return out
    return {prefix: obj}


def _set_by(paths_set: set[tuple], path: tuple) -> bool:
    return any(path[: len(p)] == p for p in paths_set)


@pytest.mark.parametrize("files", [(p.name,) for p in CONFIGS] + OVERLAYS, ids=lambda f: "+".join(f))
def test_print_config_shows_the_configs_values_and_defaults_only(files, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./cli.yaml here either
    paths = [ROOT / "configs" / f for f in files]
    dump = _print_config([a for p in paths for a in ("-c", str(p))], capsys)
    own: set[tuple] = set()
    for p in paths:
        own |= set(_leaves(yaml.safe_load(p.read_text())))
    # Lightning's defaults and those of the config's own classes, parsed with no default config file at all
    cli = ParseOnly(**{**cli_kwargs([]), "parser_kwargs": {}}, run=False, save_config_callback=None,
                    args=["--model", dump["model"]["class_path"], "--data", dump["data"]["class_path"]])
    base = _leaves(yaml.safe_load(cli.parser.dump(cli.config, skip_none=False)))
    leaked = {".".join(map(str, k)): (v, base[k]) for k, v in _leaves(dump).items()
              if not _set_by(own, k) and k in base and v != base[k]}
    assert not leaked, f"values that neither {files} nor the defaults set (from cli.yaml?): {leaked}"
    # and what the configs say is what runs: the documented data seed, their own seed_everything
    cfg0 = yaml.safe_load(paths[0].read_text())
    assert dump["seed_everything"] == cfg0["seed_everything"]
    if "quickstart" not in files[0]:
        assert dump["data"]["init_args"]["seed"] == DOCUMENTED_DATA_SEED
    for p in paths[1:]:  # an overlay's values win
        for k, v in _leaves(yaml.safe_load(p.read_text())).items():
            got = dump
            for part in k:
                got = got[part]
            assert got == v, (p.name, k)


def test_cli_yaml_applies_without_c_only(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    dump = _print_config([], capsys)  # no -c: the repository's cli.yaml
    cli = yaml.safe_load((ROOT / "cli.yaml").read_text())
    assert dump["trainer"]["max_epochs"] == cli["trainer"]["max_epochs"]
    assert dump["model"]["class_path"] == cli["model"]["class_path"]
    # with -c, its max_epochs no longer caps a max_steps run (it stopped a 4000-step run at step 1152)
    dump = _print_config(["-c", str(ROOT / "configs/quickstart_unet.yaml"), "--trainer.max_steps=4000"], capsys)
    assert dump["trainer"]["max_epochs"] is None and dump["trainer"]["max_steps"] == 4000


def test_every_config_saves_what_a_resume_needs():
    """A checkpoint callback that writes `last` at the final step and on preemption, and a named logger, so
    ``--ckpt_path last`` finds the experiment's newest run."""
    for p in [ROOT / "cli.yaml", *CONFIGS]:
        t = yaml.safe_load(p.read_text())["trainer"]
        classes = [c["class_path"] for c in t.get("callbacks", [])]
        assert "lightning_modules.ResumableCheckpoint" in classes, p.name
        assert t["logger"]["init_args"]["name"], p.name
