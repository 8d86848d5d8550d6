"""Caches of frozen-encoder outputs for training: VAE posteriors per sample id, text states per caption."""

from msdm.cache.fingerprints import text_encoder_fingerprint, transform_fingerprint, vae_fingerprint
from msdm.cache.training import TrainingCache

__all__ = ["TrainingCache", "text_encoder_fingerprint", "transform_fingerprint", "vae_fingerprint"]
