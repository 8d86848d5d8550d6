"""The scaling configs: they merge onto experiment configs through the CLI and name valid strategies."""

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_fast_and_ddp_overlays_merge_onto_an_msdm_config(tmp_path, monkeypatch, capsys):
    from msdm.cli import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        main(["fit", "-c", str(ROOT / "configs/quickstart_unet.yaml"), "-c", str(ROOT / "configs/scale/msdm_unet_fast.yaml"),
              "-c", str(ROOT / "configs/scale/ddp.yaml"), "--trainer.num_nodes=2", "--print_config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    model = cfg["model"]
    assert model["class_path"] == "lightning_modules.MSDMUNetModule"
    a = model["init_args"]
    assert a["cache_dir"] == "cache/msdm" and a["channels_last"] and a["torch_compile"] and a["frozen_dtype"] == "bfloat16"
    own = yaml.safe_load((ROOT / "configs/quickstart_unet.yaml").read_text())["model"]["init_args"]
    assert (a["preset"], a["lr"]) == (own["preset"], own["lr"])  # the experiment's own settings survive
    t = cfg["trainer"]
    assert (t["strategy"], t["devices"], t["num_nodes"], t["precision"]) == ("ddp", 4, 2, "bf16-mixed")


def test_fsdp_flux_config_names_a_valid_strategy():
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    cfg = yaml.safe_load((ROOT / "configs/scale/fsdp_flux.yaml").read_text())
    spec = cfg["trainer"]["strategy"]
    module, name = spec["class_path"].rsplit(".", 1)
    strategy = getattr(importlib.import_module(module), name)(**spec["init_args"])
    policy = strategy.kwargs["auto_wrap_policy"]
    assert set(policy._module_classes) == {FluxTransformerBlock, FluxSingleTransformerBlock}
    assert strategy.mixed_precision.param_dtype.__repr__() == "torch.bfloat16"
    assert strategy.sharding_strategy.name == "FULL_SHARD" and cfg["model"]["init_args"]["frozen_dtype"] == "float32"
