import pytest

from fmit_plugin.commands import main
from tests.conftest import train_tiny


def test_model_card_command_prints_and_writes_the_card(tiny_bert, tmp_path, capsys):
    train_tiny(tiny_bert, tmp_path / "run", num_epochs=1)
    capsys.readouterr()
    main(argv=["model-card", str(tmp_path / "run" / "model.tar.gz"), "--output-file", str(tmp_path / "card.md")])
    printed = capsys.readouterr().out
    assert printed.startswith("# Model card:") and "## Data" in printed and "## Config as run" in printed
    assert (tmp_path / "card.md").read_text() == printed


def test_model_card_of_a_missing_archive_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv=["model-card", str(tmp_path / "missing.tar.gz")])
    assert exit_info.value.code == 2
    assert "Archive not found" in capsys.readouterr().err
