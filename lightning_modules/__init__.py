"""Thin Lightning shells around the msdm core: one LightningModule per generator, plus metric/image callbacks."""
