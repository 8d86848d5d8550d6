"""ClassifierModule + UtilityDataModule: the classifier learns, loads local weights, and tests exactly once per
sample (also under 2-process DDP, where the sampler pads the last share)."""

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import run_rank_script

from datamodules.utility import UtilityDataModule
from lightning_modules.classifier import ClassifierModule
from msdm.utility.data import LabelledImages
from msdm.utility.metrics import classification_metrics

ROOT = Path(__file__).resolve().parent.parent


def toy_images(n: int, seed: int = 0, multilabel: bool = False) -> LabelledImages:
    """Class 1 images are brighter in the left half: learnable by a tiny CNN in a few steps."""
    g = torch.Generator().manual_seed(seed)
    target = torch.arange(n) % 2
    x = torch.randint(60, 140, (n, 3, 16, 16), generator=g)
    x[target == 1, :, :, :8] += 100
    if multilabel:
        t = torch.stack([target, 1 - target], 1).float()
        return LabelledImages(x.to(torch.uint8), t, [f"t{i}" for i in range(n)], ["bright", "dark"], True)
    return LabelledImages(x.to(torch.uint8), target, [f"t{i}" for i in range(n)], ["dark", "bright"])


def _trainer(**kw):
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, **kw)


@pytest.mark.parametrize("multilabel", [False, True])
def test_small_cnn_learns_and_tests_each_sample_once_in_order(multilabel):
    pl.seed_everything(0, verbose=False)
    real, test = toy_images(24, 0, multilabel), toy_images(11, 1, multilabel)
    dm = UtilityDataModule(real, test, list(range(20)), [20, 21, 22, 23], batch_size=4, seed=0)
    model = ClassifierModule(num_classes=2, multilabel=multilabel, width=4, lr=1e-2)
    trainer = _trainer(max_epochs=8)
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer.fit(model, datamodule=dm)
    after = float(trainer.callback_metrics["val/loss"])
    trainer.test(model, datamodule=dm, verbose=False)
    pred = model.test_predictions
    assert pred["index"].tolist() == list(range(11))
    assert torch.equal(pred["target"], test.targets)
    model.eval()
    with torch.no_grad():
        x = torch.stack([dm.test_set[i]["pixel_values"] for i in range(11)])
        probs = model.probabilities(model(x))
    assert torch.allclose(pred["probs"], probs, atol=1e-6)
    metrics = classification_metrics(probs, test.targets, multilabel)
    assert trainer.callback_metrics["test/accuracy"] == pytest.approx(metrics["accuracy"])
    assert metrics["accuracy"] >= 0.9  # it learned the bright half
    assert after < 0.5 * before


def test_resnet18_starts_from_local_weights_with_a_new_head(tmp_path):
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    torch.manual_seed(3)
    ref = resnet18(weights=None)  # stands in for torchvision's ImageNet file, copied to an offline machine
    torch.save(ref.state_dict(), tmp_path / "resnet18.pth")
    save_file(ref.state_dict(), str(tmp_path / "resnet18.safetensors"))
    for f in ("resnet18.pth", "resnet18.safetensors"):
        m = ClassifierModule(num_classes=3, arch="resnet18", weights=str(tmp_path / f))
        assert torch.equal(m.net.conv1.weight, ref.conv1.weight)
        assert torch.equal(m.net.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
        assert m.net.fc.out_features == 3 and m.norm.imagenet
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        assert m(x).shape == (2, 3)
    scratch = ClassifierModule(num_classes=3, arch="resnet18")
    assert not scratch.norm.imagenet and not torch.equal(scratch.net.conv1.weight, ref.conv1.weight)
    torch.save({"something": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a ResNet-18 state dict"):
        ClassifierModule(num_classes=3, arch="resnet18", weights=str(tmp_path / "other.pth"))
    with pytest.raises(ValueError, match="arch='resnet18'"):
        ClassifierModule(num_classes=3, weights=str(tmp_path / "resnet18.pth"))


def test_validation_split_must_exist():
    real = toy_images(4)
    with pytest.raises(ValueError, match="validation split is empty"):
        UtilityDataModule(real, real, [0, 1, 2, 3], [])


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_test_predictions_equal_one_process(tmp_path):
    import runpy

    script = ROOT / "tests/scripts/ddp_utility_test.py"
    runpy.run_path(str(script))["main"](1, str(tmp_path))  # the single-process reference, in this process
    one = json.loads((tmp_path / "rank0.json").read_text())
    d = tmp_path / "ddp"
    d.mkdir()
    # rank 0 writes the gathered result: read its file only
    out = {1: one, 2: run_rank_script("ddp_utility_test.py", 2, d, cwd=d, world_size=1)[0]}
    assert out[2]["world_size"] == 2
    assert out[2]["index"] == out[1]["index"] == list(range(7))  # 7 samples: rank 1's share was padded
    assert torch.allclose(torch.tensor(out[2]["probs"]), torch.tensor(out[1]["probs"]), atol=1e-6)
    assert out[2]["metrics"] == pytest.approx(out[1]["metrics"])
