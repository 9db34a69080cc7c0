"""What importing a DEEPaaS package does to warnings stays inside it."""

from __future__ import annotations

import logging
import warnings

from marshmallow.warnings import Marshmallow4Warning

from deepserve import adapters, loader
from deepserve.adapters.quiet import deepaas_code


def test_old_style_fields_show_no_marshmallow4_deprecations(fake_site):
    """fake_oldstyle builds its fields with missing=, description=... as
    webargs 5 packages do: each a marshmallow 4 deprecation, noise for a
    server that keeps marshmallow 3."""
    available = loader.discover(loader.installed_entry_points())
    (ref,) = loader.select(available, ["oldstyle"])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = adapters.build(ref)
        # Without the adapter, the same calls do warn: the test can fail.
        ref_module = loader.import_target(ref)
        ref_module.get_predict_args()  # type: ignore[attr-defined]
    assert "text" in model.predict_args()
    raised = [w for w in seen if issubclass(w.category, Marshmallow4Warning)]
    assert raised, "fake_oldstyle no longer uses deprecated keywords"
    assert all("fake_oldstyle" in w.filename or "fields" in w.filename for w in raised)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        adapters.build(ref)
    assert [w for w in seen if issubclass(w.category, Marshmallow4Warning)] == []


def test_the_process_warning_settings_are_put_back():
    """As importing deepaas does: capture warnings into logging, show every
    DeprecationWarning. None of it outlives the block."""
    shown, filters = warnings.showwarning, list(warnings.filters)
    try:
        with deepaas_code():
            logging.captureWarnings(True)
            warnings.simplefilter("default", DeprecationWarning)
        assert warnings.showwarning is shown
        assert warnings.filters == filters
    finally:
        logging.captureWarnings(False)
    assert warnings.showwarning is shown


def test_other_warnings_of_the_model_are_still_shown():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with deepaas_code():
            warnings.warn("weights from another version", UserWarning, stacklevel=1)
            warnings.warn("old", DeprecationWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["weights from another version"]


def test_logging_capture_is_as_it_was():
    """Importing deepaas turns logging's capture of warnings on; it is off
    again after, in logging's own state too, so that a later
    captureWarnings(True) still works."""
    assert getattr(logging, "_warnings_showwarning", None) is None
    with deepaas_code():
        pass
    assert getattr(logging, "_warnings_showwarning", None) is None
    logging.captureWarnings(True)
    try:
        assert warnings.showwarning is not logging._warnings_showwarning  # type: ignore[attr-defined]
    finally:
        logging.captureWarnings(False)
