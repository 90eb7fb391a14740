"""Atomic writes: a reader sees the old file or folder or the new one, never half of one, and a failure leaves the
old one as it was. Run: pytest tests/test_files.py"""

import json

import pytest

from duollm.errors import DuoError
from duollm.files import atomic_folder, atomic_path, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert json.loads(path.read_text()) == {"v": 1} and sorted(p.name for p in path.parent.iterdir()) == ["a.json"]
    write_json(path, {"v": "é"}, indent=None, ensure_ascii=False)
    assert path.read_text(encoding="utf-8") == '{"v": "é"}\n'


def test_a_folder_is_swapped_in_whole_or_not_at_all(tmp_path):
    folder = tmp_path / "report"
    with atomic_folder(folder) as tmp:
        (tmp / "old.html").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(folder) as tmp:
        (tmp / "new.html").write_text("new")
        raise RuntimeError("interrupted")
    assert [p.name for p in folder.iterdir()] == ["old.html"]
    with atomic_folder(folder) as tmp:
        (tmp / "new.html").write_text("new")
    assert [p.name for p in folder.iterdir()] == ["new.html"] and sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    with pytest.raises(DuoError, match="already exists and is not an empty folder"), atomic_folder(folder, fresh=True):
        pass
    assert [p.name for p in folder.iterdir()] == ["new.html"]
