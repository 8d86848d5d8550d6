"""Old import paths of modules that moved (the house refactor, issue 22): each old path is the new module itself.

``alias_module(__name__, "msdm.new.place")`` in the old file makes ``import msdm.old.place`` return the module object
of the new place (one module, two names: a monkeypatch through either name patches both) and emits a
``DeprecationWarning`` naming the new path. New code imports the new path; the aliases are kept for users' code,
notebooks and configs written against the old layout.
"""

from __future__ import annotations

import importlib
import sys
import warnings


def alias_module(old: str, new: str) -> None:
    """Make the module being imported as ``old`` the module ``new`` (call it from ``old``'s file)."""
    module = importlib.import_module(new)
    warnings.warn(f"{old} moved to {new}; import it from there (the old path is a deprecated alias)",
                  DeprecationWarning, stacklevel=3)
    sys.modules[old] = module
