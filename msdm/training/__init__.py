"""Training machinery that needs no Trainer: the EMA of weights (:mod:`~msdm.training.ema`) and MSDM stage 2, the
U-Net on the frozen VAE and text encoder (:mod:`~msdm.training.stage2`). The Lightning shells in
``lightning_modules/`` wire them to a Trainer; a notebook loop can use them directly."""
