"""The file mode of atomically written files."""
import os
import stat
from pathlib import Path

from fmit_plugin.common.file_utils import atomic_write


def test_atomic_write_gives_new_files_the_umask_mode_and_keeps_a_replaced_file_s_mode(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    new = tmp_path / "new.json"
    atomic_write(new, lambda temp: Path(temp).write_text("{}"))
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o640)
    atomic_write(kept, lambda temp: Path(temp).write_text("new"))
    assert kept.read_text() == "new" and stat.S_IMODE(kept.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.json", "new.json"]
