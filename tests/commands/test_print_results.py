import csv
import io
import json
import statistics

import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands import main
from fmit_plugin.commands.print_results import results_table
from tests.conftest import train_tiny

KEY = "test_f1-measure-overall"


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for seed in (1, 2):
        train_tiny(tiny_bert, root / f"crf_seed{seed}", num_epochs=1, seed=seed)
    return root


def _values(root, key):
    return [json.loads((root / f"crf_seed{seed}" / "metrics.json").read_text())[key] for seed in (1, 2)]


def test_two_seeds_of_one_config_are_one_row_with_their_mean_and_std(runs):
    keys = [KEY, "test_precision-overall"]
    text = results_table([str(runs)], keys, output_format="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["runs"] == "2" and rows[0]["seeds"] == "1 2"
    for key in keys:
        values = _values(runs, key)
        assert values[0] != values[1] or key != KEY  # the seeds trained different models
        assert float(rows[0][f"{key}_mean"]) == pytest.approx(statistics.mean(values))
        assert float(rows[0][f"{key}_std"]) == pytest.approx(statistics.stdev(values))
        assert rows[0][f"{key}_n"] == "2"


def test_markdown_table_through_the_command(runs, capsys):
    main(argv=["print-results", str(runs), "-k", "test_f1-measure-*"])
    out = capsys.readouterr().out
    header, _, row = out.splitlines()[:3]
    assert KEY in header and "test_f1-measure-PER" in header and "test_precision-overall" not in header
    values = _values(runs, KEY)
    assert f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" in row
    assert "| 2 | 1, 2 |" in row


def test_different_configs_are_different_groups(tmp_path):
    for name, dropout, seed, f1 in (("a1", 0.1, 1, 0.5), ("a2", 0.1, 2, 0.7), ("b1", 0.3, 1, 0.9)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model": {"dropout": dropout},
                                                                 "trainer": {"seed": seed}}))
        (tmp_path / name / "metrics.json").write_text(json.dumps({KEY: f1, "training_record": {}}))
    rows = list(csv.DictReader(io.StringIO(results_table([str(tmp_path)], [KEY], output_format="csv"))))
    assert [(row["runs"], float(row[f"{KEY}_mean"])) for row in rows] == [("2", pytest.approx(0.6)), ("1", 0.9)]
    assert rows[1][f"{KEY}_std"] == ""  # one run has no spread
    assert float(rows[0][f"{KEY}_std"]) == pytest.approx(statistics.stdev([0.5, 0.7]))


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="no metrics.json under"):
        results_table([str(tmp_path)], [KEY])
    with pytest.raises(ConfigurationError, match="is not a directory"):
        results_table([str(tmp_path / "missing")], [KEY])
