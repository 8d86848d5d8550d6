"""Deprecated alias: this module moved to :mod:`msdm.synthetic.train_polyp_detector` (the house refactor, issue 22).

``python -m msdm.metrics.train_polyp_detector ...`` still runs the trainer.
"""

if __name__ == "__main__":
    import sys

    from msdm.synthetic.train_polyp_detector import main

    sys.exit(main())

from msdm._compat import alias_module  # noqa: E402

alias_module(__name__, "msdm.synthetic.train_polyp_detector")
