"""Sub-commands of the ``msdm`` console script other than LightningCLI's fit/validate/test/predict.

Each module in this package that defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``
becomes ``msdm NAME``. Modules are discovered, not listed, so adding a command touches one file. Heavy imports
(torch, Lightning, diffusers) belong inside ``run`` so that ``msdm --help`` stays fast.
"""
