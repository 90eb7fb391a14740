"""The optional extras: a missing or too old module is named, with the extra that installs it.
Run: pytest tests/test_extras.py"""

import pytest

from duollm import extras
from duollm.errors import DuoError


def test_missing_module_names_the_extra(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "analysis", ("json", "duollm_no_such_module"))
    assert extras.missing("analysis") == ["duollm_no_such_module"]
    with pytest.raises(DuoError, match=r"^duollm report needs duollm_no_such_module: pip install 'duollm\[analysis\]'$"):
        extras.require("analysis", "duollm report")


def test_a_release_older_than_pyproject_asks_for_is_named(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "hf", ("json",))  # importable here, whatever is installed
    monkeypatch.setitem(extras.MIN_MAJOR, "json", 5)
    monkeypatch.setattr(extras, "_major", lambda module: 4)
    with pytest.raises(DuoError, match=r"needs json>=5: pip install 'duollm\[hf\]'"):
        extras.require("hf", "exporting to Hugging Face")
    monkeypatch.setattr(extras, "_major", lambda module: 5)
    extras.require("hf", "exporting to Hugging Face")
