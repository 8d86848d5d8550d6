"""Deprecated alias: this module moved to :mod:`msdm.metrics.adherence.train_real_detector`.

``python -m msdm.metrics.train_real_detector ...`` still runs the trainer (the shipped weights record that command).
"""

if __name__ == "__main__":
    import sys

    from msdm.metrics.adherence.train_real_detector import main

    sys.exit(main())

from msdm._compat import alias_module  # noqa: E402

alias_module(__name__, "msdm.metrics.adherence.train_real_detector")
