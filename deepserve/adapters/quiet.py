"""Keep what importing a DEEPaaS package does to warnings inside it.

Importing ``deepaas`` (which DEEPaaS model packages do, and which
:mod:`deepserve.adapters.files` does where it is installed) calls
``logging.captureWarnings(True)`` and shows every ``DeprecationWarning``,
process-wide: a server would then log dozens of third-party deprecations
(distutils, ``marshmallow.__version__``...) at every start, in every worker
and training. And packages written for webargs 5 build their fields with
keywords marshmallow 4 removed (``missing=``, ``description=``...), each
a warning about a release deepserve does not install (it keeps
``marshmallow<4``).

:func:`deepaas_code` wraps the import of such a package and the reading of
its declarations. It imports ``deepaas`` first (where installed), silently,
undoing what that import changes, so that the model's own import of it
finds it imported and changes nothing; deprecations (marshmallow 4's
among them) are hidden meanwhile, as Python's defaults hide them outside
``__main__``, and the warning filters and ``showwarning`` are put back as
they were afterwards. Any other warning the model raises is still shown.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from collections.abc import Iterator

from marshmallow.warnings import Marshmallow4Warning


def _import_deepaas() -> None:
    """Import deepaas, if installed, with none of its warnings shown and
    none of its changes to warnings left behind."""
    capturing = _capturing()
    with warnings.catch_warnings():  # restores filters and showwarning
        # deepaas.config changes the filters halfway through the import;
        # the rest of deepaas imports webargs and apispec, which warn. Not
        # installed, or broken: files.py says so when it matters.
        for module in ("deepaas.config", "deepaas.model.v2.wrapper"):
            warnings.simplefilter("ignore")
            with contextlib.suppress(Exception):
                importlib.import_module(module)
        if not capturing:
            # deepaas.config called logging.captureWarnings(True): undo it in
            # logging too, or a later captureWarnings(True) would do nothing.
            logging.captureWarnings(False)


def _capturing() -> bool:
    """Whether logging captures warnings now."""
    return getattr(logging, "_warnings_showwarning", None) is not None


@contextlib.contextmanager
def deepaas_code() -> Iterator[None]:
    """Around importing a DEEPaaS-style model and reading its fields."""
    _import_deepaas()
    with warnings.catch_warnings():  # restores filters and showwarning
        # Deprecations hidden, as Python's own defaults hide them outside
        # __main__ (and deepaas, imported by the model, would show them).
        for category in (DeprecationWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", category)
        warnings.simplefilter("ignore", Marshmallow4Warning)
        yield
