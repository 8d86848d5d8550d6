"""``msdm report`` over TensorBoard logs (what every shipped config writes): real event files from tiny Lightning
runs, mean ± std over seeds, a rank sweep with one row per run, a run resumed into its own version folder."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from msdm.cli import main
from msdm.metrics.report import aggregate, load_run_metrics

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


class Logs(pl.LightningModule):
    """Logs given metric values at test end through Lightning's logger, as the metric callbacks do."""

    def __init__(self, values: dict, val_fid: float = 999.0):
        super().__init__()
        self.values, self.val_fid = values, val_fid
        self.w = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch, batch_idx):
        self.log("val/fid", self.val_fid)  # a val/ value: test/ must win

    def test_step(self, batch, batch_idx):
        for k, v in self.values.items():
            self.log(f"test/{k}", v)


def _run(save_dir, name, values, version=None):
    logger = TensorBoardLogger(save_dir=str(save_dir), name=name, version=version)
    trainer = pl.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    module = Logs(values)
    loader = torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=2)
    trainer.validate(module, loader, verbose=False)
    trainer.test(module, loader, verbose=False)
    return logger.log_dir


def test_mean_and_std_over_seeds_from_event_files(tmp_path, capsys):
    fids = [20.0, 22.0, 27.0]
    for i, fid in enumerate(fids):
        _run(tmp_path / "runs" / "flux", f"seed{i}", {"fid": fid, "fbd": 100.0 + i, "fidelity": 0.5})
    runs = [str(tmp_path / "runs" / "flux" / f"seed{i}") for i in range(3)]
    table = aggregate(runs)
    row = table["flux"]
    assert row["runs"] == 3
    assert row["FID"]["mean"] == pytest.approx(np.mean(fids)) and row["FID"]["std"] == pytest.approx(np.std(fids, ddof=1))
    assert row["FBD"]["mean"] == pytest.approx(101.0) and row["fidelity"]["mean"] == pytest.approx(0.5)
    assert main(["report", *runs]) == 0
    assert "| flux | 3 | 0.50 ± 0.00 | 101.00 ± 1.00 | 23.00 ± 3.61 |" in capsys.readouterr().out


def test_rank_sweep_one_row_per_run(tmp_path, capsys):
    for r, fid in ((4, 30.0), (64, 25.0)):
        _run(tmp_path / "runs", f"flux_lora_kvasir_r{r}", {"fid": fid})
    assert main(["report", "--group-by", "run", str(tmp_path / "runs" / "flux_lora_kvasir_r4"),
                 str(tmp_path / "runs" / "flux_lora_kvasir_r64")]) == 0
    out = capsys.readouterr().out
    assert "| flux_lora_kvasir_r4 | 1 | 30.00 |" in out and "| flux_lora_kvasir_r64 | 1 | 25.00 |" in out


def test_resumed_run_in_one_version_folder_reports_the_latest_value(tmp_path):
    events = lambda: len(list((tmp_path / "exp" / "version_0").glob("events.out.tfevents.*")))  # noqa: E731
    _run(tmp_path, "exp", {"fid": 40.0}, version=0)
    first = events()
    _run(tmp_path, "exp", {"fid": 35.0}, version=0)  # more writers (a resumed run) in the same folder
    assert events() > first
    assert load_run_metrics(tmp_path / "exp") == {"FID": 35.0}
    _run(tmp_path, "exp", {"fid": 31.0})  # version_1: the newest version is reported, with a warning
    with pytest.warns(UserWarning, match="newest"):
        assert load_run_metrics(tmp_path / "exp") == {"FID": 31.0}
