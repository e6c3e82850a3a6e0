"""
`allennlp predict` under hostile tokens, malformed lines and many lines (issue 8): exactly one output
line per input line, in input order; a bad line gets an `"error"` line; the model failing on one
line costs only that line; output is flushed as it goes; memory does not grow with the input.
Regression inputs live in tests/fixtures/bad_input/predictor/.
"""
import gc
import json
import random
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.commands import main
from fmit_plugin.commands import predict as predict_module
from fmit_plugin.commands.predict import (
    InputItem,
    PredictionWriter,
    _json_lines,
    _predict_batch,
    predict_file,
    to_json_line,
)
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from fmit_plugin.data.vocabulary import Vocabulary
from fmit_plugin.models.crf_tagger import CrfTagger
from fmit_plugin.models.model import Model
from fmit_plugin.modules.token_embedders.pretrained_transformer_mismatched_embedder import (
    PretrainedTransformerMismatchedEmbedder,
)
from fmit_plugin.predictors.predictor import SentenceTaggerPredictor
from tests.bad_input_helpers import LABELS, write_run

PREDICTOR_FIXTURES = Path(__file__).parents[1] / "fixtures" / "bad_input" / "predictor"


@pytest.fixture(scope="module")
def hashing_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("hashing_run"), {"type": "test_hashing", "poison": "BOOM"})


@pytest.fixture(scope="module")
def bert_run(tiny_bert, tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("bert_run"),
                      {"type": "pretrained_transformer_mismatched", "model_name": str(tiny_bert)})


@pytest.fixture(scope="module")
def bert_predictor(tiny_bert):
    torch.manual_seed(0)
    embedder = PretrainedTransformerMismatchedEmbedder(model_name=str(tiny_bert))
    model = CrfTagger(Vocabulary({"labels": LABELS}), embedder)
    return SentenceTaggerPredictor(model, TwitterMnerReader())


def _outputs(path: Path) -> list[dict]:
    raw = path.read_bytes()
    raw.decode("utf-8")  # the output file is valid UTF-8, whatever came in
    return [json.loads(line) for line in raw.decode("utf-8").split("\n")[:-1]]


# ------------------------------------------------------------------ regression files


def test_hostile_tokens_get_one_tag_each_with_a_real_transformer(bert_run, tmp_path):
    """Zero-width characters, lone surrogates, emoji ZWJ sequences, 1000-character tokens, a
    500-word tweet, control characters, right-to-left text: no crash, one tag per token, tokens
    echoed exactly as given."""
    source = PREDICTOR_FIXTURES / "hostile_tokens.jsonl"
    inputs = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    output = tmp_path / "out.jsonl"
    assert predict_file(str(bert_run), str(source), str(output), batch_size=3, silent=True) == 0
    outputs = _outputs(output)
    assert len(outputs) == len(inputs)
    for given_line, answer in zip(inputs, outputs):
        assert answer["id"] == given_line["id"] and "error" not in answer
        if "tokens" in given_line:
            assert answer["tokens"] == given_line["tokens"]  # lone surrogates included
        assert len(answer["tags"]) == len(answer["tokens"])
        assert set(answer["tags"]) <= set(LABELS)
    by_id = {answer["id"]: answer for answer in outputs}
    assert len(by_id["500-words"]["tags"]) == 500
    assert by_id["lone-surrogates"]["tokens"][0] == "\ud800"
    assert by_id["empty"]["tags"] == []


# line number -> part of the expected error message (None: a good line)
BAD_LINES_EXPECTED = {
    1: None, 2: "line 2 is blank", 3: "line 3 is not valid JSON", 4: "line 4 is not valid JSON",
    5: "expected a JSON object, got list", 6: "expected a JSON object, got str",
    7: "expected a JSON object, got NoneType", 8: '"tokens" must be a list of strings',
    9: '"tokens" must be a list of strings', 10: 'needs "tokens"', 11: "line 11 is not usable JSON",
    12: "line 12 is not usable JSON", 13: "line 13 is not UTF-8 (byte 0xe9", 14: None,
    15: '"image" must be a string', 16: "line 16 is blank", 17: None,
}


def test_bad_lines_get_error_lines_in_place(hashing_run, tmp_path):
    output = tmp_path / "out.jsonl"
    errors = predict_file(str(hashing_run), str(PREDICTOR_FIXTURES / "bad_lines.jsonl"), str(output),
                          batch_size=4, silent=True)
    outputs = _outputs(output)
    assert len(outputs) == len(BAD_LINES_EXPECTED) == 17
    assert errors == sum(1 for expected in BAD_LINES_EXPECTED.values() if expected)
    for number, (answer, expected) in enumerate(zip(outputs, BAD_LINES_EXPECTED.values()), start=1):
        if expected is None:
            assert "error" not in answer and len(answer["tags"]) == len(answer["tokens"]), number
        else:
            assert answer["line"] == number and expected in answer["error"], (number, answer)
    assert [outputs[i].get("id") for i in (0, 7, 8, 9, 13, 14, 16)] == [1, 8, 9, 10, 14, 15, 17]
    assert outputs[13]["tokens"] == ["x"] and "image" in outputs[13]  # an image name too long: no image


def test_exit_code_is_non_zero_unless_skip_errors(hashing_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FMIT_LOG_LEVEL", "WARNING")
    source = str(PREDICTOR_FIXTURES / "bad_lines.jsonl")
    output = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as info:
        main(argv=["predict", str(hashing_run), source, "--output-file", str(output), "--silent"])
    assert info.value.code == 1
    assert "14 input lines could not be tagged" in capsys.readouterr().err
    assert len(_outputs(output)) == 17
    main(argv=["predict", str(hashing_run), source, "--output-file", str(output), "--silent", "--skip-errors"])
    assert len(_outputs(output)) == 17


def test_a_line_that_breaks_the_model_costs_only_that_line(hashing_run, tmp_path):
    lines = [{"id": n, "tokens": ["a", "BOOM" if n == 5 else "b"]} for n in range(1, 10)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    assert predict_file(str(hashing_run), str(source), str(output), batch_size=4, silent=True) == 1
    outputs = _outputs(output)
    assert [o["id"] for o in outputs] == list(range(1, 10))
    assert "the model failed on this input" in outputs[4]["error"] and outputs[4]["line"] == 5
    assert all("error" not in o and len(o["tags"]) == 2 for i, o in enumerate(outputs) if i != 4)


def _record_batch_lengths(monkeypatch) -> list[list[int]]:
    """The word counts of every batch the predictor is given, in order, appended as they come."""
    original = SentenceTaggerPredictor.predict_instances
    batches: list[list[int]] = []

    def recording(self, instances):
        batches.append([len(instance) for instance in instances])
        return original(self, instances)

    monkeypatch.setattr(SentenceTaggerPredictor, "predict_instances", recording)
    return batches


def test_batches_are_made_of_similar_lengths_and_answers_keep_input_order(hashing_run, tmp_path, monkeypatch):
    """Lengths alternating 1 and 30 words: read in windows of 8 lines, every batch of 4 holds one
    length only (input order would mix them in every batch), and output line n still answers line n.
    A window of one batch keeps the lines of each batch together."""
    lengths = [1 if n % 2 else 30 for n in range(16)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": n, "tokens": [f"w{n}"] * k}) + "\n"
                              for n, k in enumerate(lengths)), encoding="utf-8")
    batches = _record_batch_lengths(monkeypatch)
    output = tmp_path / "out.jsonl"
    assert predict_file(str(hashing_run), str(source), str(output), batch_size=4, silent=True, sort_window=8) == 0
    assert len(batches) == 4 and all(len(set(batch)) == 1 for batch in batches), batches
    outputs = _outputs(output)
    assert [o["id"] for o in outputs] == list(range(16))
    assert [o["tokens"] for o in outputs] == [[f"w{n}"] * k for n, k in enumerate(lengths)]
    assert all(len(o["tags"]) == len(o["tokens"]) for o in outputs)

    batches.clear()
    predict_file(str(hashing_run), str(source), str(output), batch_size=4, silent=True, sort_window=4)
    assert batches == [sorted(lengths[start : start + 4]) for start in range(0, 16, 4)]
    with pytest.raises(ConfigurationError, match=r"--sort-window \(2\) must be at least --batch-size \(4\)"):
        predict_file(str(hashing_run), str(source), str(output), batch_size=4, sort_window=2)


def test_batches_follow_the_models_sorting_lengths(hashing_run, tmp_path, monkeypatch):
    """The model says how long a tweet is (word pieces for a transformer); here longer in words is
    shorter to the model, so the window's batches come out longest words first."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"tokens": ["w"] * k}) + "\n" for k in range(1, 9)), encoding="utf-8")
    batches = _record_batch_lengths(monkeypatch)
    monkeypatch.setattr(Model, "sorting_lengths", lambda self, instances: [2 ** (10 - len(i)) for i in instances])
    assert predict_file(str(hashing_run), str(source), str(tmp_path / "out.jsonl"), batch_size=4, silent=True,
                        sort_window=8) == 0
    assert batches == [[8, 7, 6, 5], [4, 3, 2, 1]]


def test_an_interrupted_run_keeps_every_window_written_so_far(hashing_run, tmp_path, monkeypatch):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": n, "tokens": ["x", str(n)]}) + "\n" for n in range(100)))
    original = SentenceTaggerPredictor.predict_instances
    calls = {"n": 0}

    def interrupted(self, instances):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, instances)

    monkeypatch.setattr(SentenceTaggerPredictor, "predict_instances", interrupted)
    output = tmp_path / "out.jsonl"
    with pytest.raises(KeyboardInterrupt):
        predict_file(str(hashing_run), str(source), str(output), batch_size=10, silent=True, sort_window=20)
    outputs = _outputs(output)  # complete lines only: every one parses
    assert [o["id"] for o in outputs] == list(range(20))  # the 4th batch was in the second window


def test_lone_surrogates_are_written_as_escapes():
    result = {"tokens": ["\ud800", "caf\u00e9", "\U0001f600"]}
    line = to_json_line(result)
    line.encode("utf-8")
    assert json.loads(line) == result
    assert to_json_line({"tokens": ["caf\u00e9"]}) == '{"tokens": ["caf\u00e9"]}'  # readable when possible
    assert to_json_line({"tokens": ["caf\u00e9"]}, "ascii") == '{"tokens": ["caf\\u00e9"]}'


def test_output_file_that_cannot_be_written_is_a_clear_error(hashing_run, tmp_path):
    from tango.common.exceptions import ConfigurationError

    source = PREDICTOR_FIXTURES / "bad_lines.jsonl"
    with pytest.raises(ConfigurationError, match="Cannot write --output-file"):
        predict_file(str(hashing_run), str(source), str(tmp_path), silent=True)  # a folder
    with pytest.raises(ConfigurationError, match="--batch-size must be at least 1"):
        predict_file(str(hashing_run), str(source), str(tmp_path / "o.jsonl"), batch_size=0)


def test_dataset_reader_input_is_streamed_with_sources(hashing_run, tmp_path, monkeypatch):
    fixture = Path(__file__).parents[1] / "fixtures" / "bad_input" / "reader" / "good.txt"
    consumed = []
    original = TwitterMnerReader._read

    def counting(self, path):
        for instance in original(self, path):
            consumed.append(instance)
            yield instance

    monkeypatch.setattr(TwitterMnerReader, "_read", counting)
    written = []
    original_write = PredictionWriter.write

    def spy(self, results):
        written.append((len(consumed), len(results)))
        return original_write(self, results)

    monkeypatch.setattr(PredictionWriter, "write", spy)
    output = tmp_path / "out.jsonl"
    predict_file(str(hashing_run), str(fixture), str(output), batch_size=1, silent=True, use_dataset_reader=True,
                 sort_window=1)
    # each window was written before the next tweet was read
    assert written == [(1, 1), (2, 1), (3, 1)]
    assert [o["tokens"] for o in _outputs(output)] == [["Obama", "visits", "Paris"],
                                                     ["RT", "@bob", ":", "New", "York"], ["hello", "world"]]


# ------------------------------------------------------------------ properties

ANY_CHARACTER = st.one_of(
    st.characters(exclude_categories=()),  # every code point, surrogates and unassigned ones included
    st.sampled_from(["\ud800", "\udfff", "\u200b", "\u200d", "\ufe0f", "\U0001f468", "\U0001f3fd", "\x00", "\t"]),
)
RANDOM_TOKENS = st.lists(st.text(ANY_CHARACTER, min_size=0, max_size=20), min_size=0, max_size=12)


@settings(max_examples=40, deadline=None)
@given(batch=st.lists(RANDOM_TOKENS, min_size=1, max_size=4))
def test_property_random_unicode_tokens_get_one_tag_each(bert_predictor, batch):
    answers = bert_predictor.predict_batch_json([{"tokens": tokens} for tokens in batch])
    assert len(answers) == len(batch)
    for tokens, answer in zip(batch, answers):
        assert answer["tokens"] == tokens
        assert len(answer["tags"]) == len(tokens)
        assert set(answer["tags"]) <= set(LABELS)
        assert json.loads(to_json_line(answer)) == json.loads(json.dumps(answer))  # writable, same value


GOOD_JSON = st.fixed_dictionaries({"tokens": RANDOM_TOKENS}, optional={"id": st.integers(), "sentence": st.text()})
ANY_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(ANY_CHARACTER),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                        max_leaves=8)
LINES = st.one_of(
    GOOD_JSON.map(lambda value: json.dumps(value).encode("utf-8")),
    ANY_JSON.map(lambda value: json.dumps(value).encode("utf-8")),
    st.binary(max_size=30).map(lambda raw: raw.replace(b"\n", b"")),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(LINES, min_size=1, max_size=12), batch_size=st.integers(1, 5))
def test_property_any_lines_give_one_result_each_in_order(hashing_predictor, lines, batch_size):
    items = list(_json_lines(line + b"\n" for line in lines))
    assert [item.line for item in items] == list(range(1, len(lines) + 1))
    results = []
    for start in range(0, len(items), batch_size):
        results.extend(_predict_batch(hashing_predictor, items[start : start + batch_size]))
    assert len(results) == len(lines)
    for number, (item, result) in enumerate(zip(items, results), start=1):
        json.loads(to_json_line(result))
        if "error" in result:
            assert result["line"] == number
            assert isinstance(result["error"], str) and result["error"]
        else:
            assert isinstance(item.payload, dict)
            assert len(result["tags"]) == len(result["tokens"])
            if "tokens" in item.payload:
                assert result["tokens"] == item.payload["tokens"]


@pytest.fixture(scope="module")
def hashing_predictor(hashing_run):
    from fmit_plugin.models.archival import load_archive

    archive = load_archive(hashing_run)
    return SentenceTaggerPredictor(archive.model, archive.validation_dataset_reader)


# ------------------------------------------------------------------ many lines


def test_tens_of_thousands_of_lines_stream_in_order_in_bounded_memory(hashing_run, tmp_path, monkeypatch):
    """20,000 lines (every 1000th one broken): one output line each, in order; input is read only a
    window ahead of output; every window is on disk when the next is read; and the Python heap
    (`sys.getallocatedblocks`, after a collection) does not grow with the lines done. An
    implementation holding the inputs or the outputs would add tens of objects per line, hundreds
    of thousands of blocks here."""
    lines, batch_size, window = 20_000, 500, 1000
    rng = random.Random(8)
    words = ["Obama", "visits", "Paris", "today", "rt", "@bob", "#news", "i", "love", "london", "\u200b", "\U0001f600"]
    source = tmp_path / "in.jsonl"
    with open(source, "w", encoding="utf-8") as handle:
        for n in range(1, lines + 1):
            if n % 1000 == 0:
                handle.write("{broken\n")
            else:
                tokens = [rng.choice(words) for _ in range(rng.randint(1, 6))]
                handle.write(json.dumps({"id": n, "tokens": tokens}) + "\n")
    output = tmp_path / "out.jsonl"
    consumed = {"n": 0}
    original_lines = predict_module._json_lines

    def counting_lines(handle):
        for item in original_lines(handle):
            consumed["n"] += 1
            yield item

    monkeypatch.setattr(predict_module, "_json_lines", counting_lines)
    samples: list[tuple[int, int]] = []
    original_write = PredictionWriter.write

    def spy(self: PredictionWriter, results: list[dict]) -> bool:
        # input runs at most one window ahead of output
        assert consumed["n"] <= self.lines_written + len(results) + 1
        written = original_write(self, results)
        if self.lines_written // window in (2, 6, 12, 19):
            # flushed: everything written so far is on disk, as whole lines
            assert output.read_bytes().count(b"\n") == self.lines_written
            gc.collect()
            samples.append((self.lines_written, sys.getallocatedblocks()))
        return written

    monkeypatch.setattr(PredictionWriter, "write", spy)
    errors = predict_file(str(hashing_run), str(source), str(output), batch_size=batch_size, silent=True,
                          sort_window=window)
    assert errors == lines // 1000
    assert len(samples) == 4
    growth = max(blocks for _, blocks in samples) - samples[0][1]
    assert growth < 20_000, samples
    with open(output, encoding="utf-8") as handle:
        count = 0
        for count, line in enumerate(handle, start=1):
            answer = json.loads(line)
            if count % 1000 == 0:
                assert answer["line"] == count and "not valid JSON" in answer["error"]
            else:
                assert answer["id"] == count and len(answer["tags"]) == len(answer["tokens"])
    assert count == lines


def test_input_item_failure_echoes_line_source_and_id():
    item = InputItem(7, "data.txt:3", {"id": "x"})
    assert item.failure("bad") == {"line": 7, "source": "data.txt:3", "id": "x", "error": "bad"}


def test_a_picture_that_cannot_be_drawn_costs_no_prediction(hashing_run, tmp_path, monkeypatch, caplog):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": n, "tokens": ["x"], "image": f"img{n}"}) + "\n" for n in range(6)))
    drawn = []

    def flaky(result, path):
        if result["id"] == 2:
            raise OSError("no space left on device")
        drawn.append(Path(path).name)

    monkeypatch.setattr(predict_module, "save_prediction_picture", flaky)
    output = tmp_path / "out.jsonl"
    with caplog.at_level("WARNING", logger="fmit_plugin.commands.predict"):
        errors = predict_file(str(hashing_run), str(source), str(output), batch_size=4, silent=True,
                              render_dir=str(tmp_path / "pictures"))
    assert errors == 0
    assert [o["id"] for o in _outputs(output)] == list(range(6))
    assert drawn == ["000001-0.png", "000002-1.png", "000004-3.png", "000005-4.png", "000006-5.png"]
    assert any("line 3: no picture: OSError: no space left on device" in r.getMessage() for r in caplog.records)
    assert any("1 pictures could not be drawn" in r.getMessage() for r in caplog.records)


def test_output_file_that_is_the_input_is_refused_before_anything_is_lost(hashing_run, tmp_path):
    from tango.common.exceptions import ConfigurationError

    source = tmp_path / "in.jsonl"
    source.write_text('{"tokens": ["a"]}\n')
    (tmp_path / "link.jsonl").symlink_to(source)
    for output in (source, tmp_path / "link.jsonl"):
        with pytest.raises(ConfigurationError, match="is the input file"):
            predict_file(str(hashing_run), str(source), str(output), silent=True)
    assert source.read_text() == '{"tokens": ["a"]}\n'


@pytest.fixture(scope="module")
def fmit_predictor(tiny_bert):
    encoder = {"type": "flat_lattice_transformer", "input_dim": 16, "num_layers": 1, "num_attention_heads": 2,
               "feedforward_hidden_dim": 32, "dropout_prob": 0.0, "max_distance": 64}
    params = {"type": "fmit", "encoder": encoder, "visual_dim": 8,
              "text_field_embedder": {"type": "pretrained_transformer_mismatched", "model_name": str(tiny_bert)}}
    torch.manual_seed(0)
    model = Model.from_params(Params(params), vocab=Vocabulary({"labels": LABELS}))
    return SentenceTaggerPredictor(model, TwitterMnerReader())


def test_fmit_gives_one_tag_per_hostile_token(fmit_predictor):
    inputs = [json.loads(line) for line in (PREDICTOR_FIXTURES / "hostile_tokens.jsonl").read_text().splitlines()]
    answers = fmit_predictor.predict_batch_json(inputs)
    for given_line, answer in zip(inputs, answers):
        if "tokens" in given_line:
            assert answer["tokens"] == given_line["tokens"]
        assert len(answer["tags"]) == len(answer["tokens"]), given_line["id"]
    assert len(answers[4]["tags"]) == 500


@settings(max_examples=20, deadline=None)
@given(batch=st.lists(RANDOM_TOKENS, min_size=1, max_size=3))
def test_property_fmit_random_unicode_tokens_get_one_tag_each(fmit_predictor, batch):
    answers = fmit_predictor.predict_batch_json([{"tokens": tokens} for tokens in batch])
    assert [len(answer["tags"]) for answer in answers] == [len(tokens) for tokens in batch]
