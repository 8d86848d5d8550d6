"""Real-size readiness without a GPU: the published generators at full width and reduced depth.

- :mod:`msdm.scale.specs`: for each generator, which published ``config.json`` every component comes from and which
  depth keys (layers, blocks) are cut for a CPU run; every width stays real.
- :mod:`msdm.scale.build`: random-weight pipeline folders of those configs, written with the stock ``save_pretrained``
  so the LightningModules and the stock pipelines load them like a local copy of the hub model.
- :mod:`msdm.scale.activations`: bytes an autograd forward keeps for backward, measured with saved-tensor hooks (on
  the meta device: any resolution, no memory), with and without gradient checkpointing.
- :mod:`msdm.scale.memory`: predicted peak GPU memory of a training config at full depth (``msdm memory``).
"""
