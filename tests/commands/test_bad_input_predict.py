"""
`allennlp predict` as a hostile new user drives it (issue 16): every image the model could not use
says why in its line's `"warnings"` and the run ends with one summary line of counts by reason;
image paths are vetted with `stat` before a byte is read; a tweet longer than the model takes fails
at once, naming the limit and how to raise it; output lines are strict JSON that every JSON-lines
reader splits as we do; pipes are read as stdin is; an output that cannot be written names its path.
"""
import json
import logging
import os
import shutil
import threading
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from fmit_plugin.commands.predict import predict_file, to_json_line
from tests.bad_input_helpers import HashingEmbedder, one_error_line, write_run

IMAGE_FIXTURES = Path(__file__).parents[1] / "fixtures" / "bad_input" / "images"
PREDICT_LOGGER = "fmit_plugin.commands.predict"


def _strict_lines(path: Path) -> list[dict]:
    """The output's lines as a strict reader sees them: split by `str.splitlines` (which also
    breaks at U+2028, U+2029 and U+0085), no NaN or Infinity."""

    def refuse(name):
        raise AssertionError(f"{name} in the output")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text(encoding="utf-8").splitlines()]


def _write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _summary_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PREDICT_LOGGER and "images" in r.getMessage()]


# ------------------------------------------------------------------ images


@pytest.fixture
def visual_run(tmp_path_factory):
    """A tagger whose dataset reader extracts visual objects (so images are read), with an image folder."""
    root = tmp_path_factory.mktemp("visual_run")
    images = root / "images"
    images.mkdir()
    reader = {"type": "twitter_mner", "image_dir": str(images),
              "visual_objects": {"backbone": {"type": "test_mean_colour"}}}
    return write_run(root / "run", {"type": "test_hashing"}, dataset_reader=reader), images


def _hostile_images(folder: Path, images: Path) -> dict[str, tuple[str, str]]:
    """Every kind of unusable image the issue lists: `"image"` value -> (status, fragment its
    warning must hold)."""
    Image.new("RGB", (8, 8), (250, 0, 0)).save(images / "good.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    noisy = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    noisy.save(folder / "whole.png")
    whole = (folder / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "text.jpg").write_text("<html>404 not found</html>\n", encoding="utf-8")
    Image.new("1", (10_000, 10_000)).save(folder / "bomb.png")  # 100M pixels, a few KB
    shutil.copy(IMAGE_FIXTURES / "one_by_50000.png", folder / "strip.png")
    shutil.copy(IMAGE_FIXTURES / "zero_by_zero.png", folder / "zero.png")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "folder.jpg").mkdir()
    os.mkfifo(folder / "pipe.jpg")
    with open(folder / "huge.jpg", "wb") as handle:
        handle.truncate(2 * 1024**3)  # sparse: 2 GB by stat
    (folder / "dangling.jpg").symlink_to(folder / "nowhere.jpg")
    os.symlink(folder / "loop_b.jpg", folder / "loop.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop_b.jpg")
    cases = {
        "good": ("ok", ""),
        str(folder / "absent.jpg"): ("missing", "absent.jpg: no such file"),
        "424242": ("missing", f"no image '424242' in image_dir {images}"),
        str(folder / "corrupt.jpg"): ("corrupt", "corrupt.jpg"),
        str(folder / "truncated.png"): ("corrupt", "truncated.png"),
        str(folder / "text.jpg"): ("corrupt", "not an image Pillow can identify"),
        str(folder / "bomb.png"): ("too_large", "pixels"),
        str(folder / "strip.png"): ("degenerate", "1x50000"),
        str(folder / "zero.png"): ("corrupt", "zero.png"),
        str(folder / "empty.jpg"): ("empty_file", "0 bytes"),
        str(folder / "folder.jpg"): ("not_a_file", "a folder"),
        str(folder / "pipe.jpg"): ("not_a_file", "a FIFO"),
        str(folder / "huge.jpg"): ("too_large", "2147483648 bytes > max_bytes 50000000"),
        str(folder / "dangling.jpg"): ("missing", "dangling.jpg: no such file"),
        str(folder / "loop.jpg"): ("not_a_file", "loop.jpg"),
        "https://pbs.twimg.com/media/x.jpg": ("url", "local files"),
        "../../etc/escape.jpg": ("missing", "../../etc/escape.jpg: no such file"),  # no reaching out of the folder
    }
    if os.path.exists("/dev/zero"):
        cases["/dev/zero"] = ("not_a_file", "a character device")
    if os.path.exists("/proc/self/status"):
        cases["/proc/self/status"] = ("empty_file", "/proc")
    return cases


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_every_unusable_image_is_a_warning_naming_why_and_one_summary_line(visual_run, tmp_path, monkeypatch,
                                                                            caplog):
    run, images = visual_run
    folder = tmp_path / "hostile"
    folder.mkdir()
    cases = _hostile_images(folder, images)
    monkeypatch.chdir(folder)
    lines = [{"id": n, "tokens": ["a", "b"], "image": image} for n, image in enumerate(cases)]
    source = _write_lines(tmp_path / "in.jsonl", [*lines, {"tokens": [], "image": "good"}])
    output = tmp_path / "out.jsonl"
    with caplog.at_level(logging.INFO):
        assert predict_file(str(run), str(source), str(output), batch_size=4, silent=True) == 0
    answers = _strict_lines(output)
    assert len(answers) == len(cases) + 1 and len(cases) >= 19
    assert answers.pop()["warnings"] == ["image not used: the tweet has no words to tag"]
    for answer, (image, (status, fragment)) in zip(answers, cases.items()):
        assert len(answer["tags"]) == 2, image
        if status == "ok":
            assert "warnings" not in answer, answer
            continue
        assert len(answer["warnings"]) == 1, answer
        warning = answer["warnings"][0]
        assert warning.startswith(f"image not used ({status}: ") and fragment in warning, (image, warning)
        assert warning.endswith("the model saw the uniform empty image")
    summaries = _summary_lines(caplog)
    assert len(summaries) == 1, summaries
    counts = Counter(status for status, _ in cases.values())
    failures = sum(count for status, count in counts.items() if status != "ok")
    assert summaries[0].startswith(f"images: {counts['ok']} read, {failures} empty (")
    for status, count in counts.items():
        if status != "ok":
            assert f"{status} {count}" in summaries[0], summaries[0]
    assert summaries[0].endswith("; 1 images ignored (a text-only model, or a tweet without words)")


def test_a_text_only_model_says_it_ignores_the_image(tmp_path, caplog):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})  # its reader has no visual_objects
    Image.new("RGB", (8, 8)).save(tmp_path / "fine.png")
    source = _write_lines(tmp_path / "in.jsonl", [{"tokens": ["a"], "image": str(tmp_path / "fine.png")},
                                                  {"tokens": ["a"], "image": "/no/such.jpg"}, {"tokens": ["a"]}])
    output = tmp_path / "out.jsonl"
    with caplog.at_level(logging.INFO):
        predict_file(str(run), str(source), str(output), silent=True)
    answers = _strict_lines(output)
    for answer in answers[:2]:
        assert answer["warnings"] == ["image ignored: this model is text-only (its dataset reader has no "
                                      "visual_objects)"]
    assert "warnings" not in answers[2]
    assert _summary_lines(caplog) == ["2 images ignored (a text-only model, or a tweet without words)"]


# ------------------------------------------------------------------ long tweets


@pytest.fixture
def tiny_fmit_run(tmp_path_factory):
    encoder = {"type": "flat_lattice_transformer", "input_dim": 8, "num_layers": 1, "num_attention_heads": 2,
               "feedforward_hidden_dim": 8, "dropout_prob": 0.0, "max_distance": 16}
    return write_run(tmp_path_factory.mktemp("fmit_run"), {"type": "test_hashing"},
                     model={"type": "fmit", "encoder": encoder, "visual_dim": 3})


def _seen_lengths(monkeypatch) -> list[int]:
    """The longest tweet each call of the text embedder was given."""
    seen: list[int] = []
    original = HashingEmbedder.forward

    def recording(self, words):
        seen.append(max(len(sentence) for sentence in words))
        return original(self, words)

    monkeypatch.setattr(HashingEmbedder, "forward", recording)
    return seen


def test_a_tweet_too_long_for_fmit_fails_at_once_naming_the_limit(tiny_fmit_run, tmp_path, monkeypatch):
    """5000 and 200,000 words: the (batch, L, L, d) encoding would need 51 GB at 5000 words with d =
    512. Each such line gets an error giving the limit and the override that raises it; the model
    never sees it; the other lines are tagged."""
    seen = _seen_lengths(monkeypatch)
    lines = [{"tokens": ["w"] * 5000}, {"tokens": ["w"] * 200_000}, {"tokens": ["a", "b", "c"]}]
    source = _write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    assert predict_file(str(tiny_fmit_run), str(source), str(output), silent=True) == 2
    answers = _strict_lines(output)
    for answer, words in zip(answers[:2], (5000, 200_000)):
        assert f"{words} words is over this model's max_words of 512" in answer["error"]
        assert f"""-o '{{"model.max_words": {words}}}'""" in answer["error"]
    assert len(answers[2]["tags"]) == 3
    assert max(seen) == 3


def test_the_length_limit_is_raised_with_an_override(tiny_fmit_run, tmp_path):
    source = _write_lines(tmp_path / "in.jsonl", [{"tokens": ["w"] * 600}])
    output = tmp_path / "out.jsonl"
    assert predict_file(str(tiny_fmit_run), str(source), str(output), silent=True) == 1
    assert predict_file(str(tiny_fmit_run), str(source), str(output), silent=True,
                        overrides='{"model.max_words": 600}') == 0
    assert len(_strict_lines(output)[0]["tags"]) == 600


def test_crf_tagger_tags_5000_words_and_refuses_200000_at_once(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    seen = _seen_lengths(monkeypatch)
    source = _write_lines(tmp_path / "in.jsonl", [{"tokens": ["w"] * 5000}, {"tokens": ["w"] * 200_000}])
    output = tmp_path / "out.jsonl"
    assert predict_file(str(run), str(source), str(output), silent=True) == 1
    answers = _strict_lines(output)
    assert len(answers[0]["tags"]) == 5000  # one tag per token
    assert "200000 words is over this model's max_words of 10000" in answers[1]["error"]
    assert max(seen) == 5000


# ------------------------------------------------------------------ strict JSON lines


def test_nan_and_infinity_are_refused_on_input_and_never_written(tmp_path):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": NaN, "tokens": ["a"]}\n{"id": -Infinity, "tokens": ["a"]}\n'
                      '{"id": 3, "tokens": ["a"]}\n', encoding="utf-8")
    output = tmp_path / "out.jsonl"
    assert predict_file(str(run), str(source), str(output), silent=True) == 2
    answers = _strict_lines(output)
    assert answers[0] == {"line": 1, "error": "line 1 is not usable JSON: NaN is not JSON (RFC 8259 has no NaN "
                                              "or Infinity); quote it"}
    assert "-Infinity is not JSON" in answers[1]["error"]
    assert answers[2]["id"] == 3
    # a non-finite float in a result (a model gone wrong) is written as a string
    line = to_json_line({"id": float("nan"), "confidence": [float("inf"), float("-inf"), 0.5]})
    assert json.loads(line) == {"id": "NaN", "confidence": ["Infinity", "-Infinity", 0.5]}


@pytest.mark.parametrize("encoding", ["utf-8", "ascii"])
def test_line_separators_in_tokens_are_escaped(encoding):
    tokens = ["a\u2028b", "c\u2029d", "e\x85f", "\u2028"]
    line = to_json_line({"tokens": tokens}, encoding)
    assert len(line.splitlines()) == 1
    assert "\u2028" not in line and "\u2029" not in line and "\x85" not in line
    assert json.loads(line) == {"tokens": tokens}


def test_line_separators_keep_output_lines_aligned(tmp_path):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    lines = [{"tokens": ["a\u2028b"]}, {"sentence": "x\u2029y"}, {"tokens": ["z"]}]
    source = _write_lines(tmp_path / "in.jsonl", lines)
    output = tmp_path / "out.jsonl"
    predict_file(str(run), str(source), str(output), silent=True)
    answers = _strict_lines(output)
    assert [answer["tokens"] for answer in answers] == [["a\u2028b"], ["x", "y"], ["z"]]


@pytest.mark.parametrize("sentence", ["   ", "\t\n", "\u3000\xa0", "\u200b", "\u200b \ufeff\u2060"])
def test_a_sentence_of_only_whitespace_gives_no_tags(sentence, tmp_path):
    run = write_run(tmp_path / "run", {"type": "test_hashing"})
    source = _write_lines(tmp_path / "in.jsonl", [{"sentence": sentence}])
    output = tmp_path / "out.jsonl"
    assert predict_file(str(run), str(source), str(output), silent=True) == 0
    assert _strict_lines(output) == [{"tokens": [], "tags": [], "entities": []}]


# ------------------------------------------------------------------ pipes and outputs


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("text_run"), {"type": "test_hashing"})


def test_a_pipe_is_read_as_stdin_is(text_run, tmp_path):
    """`predict model <(cat f)` hands predict `/dev/fd/N`, a pipe: read as a stream, not refused
    as "not found"."""
    lines = [{"id": n, "tokens": ["a", "b"]} for n in range(5)]
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: os.write(write_end, b"".join(
        json.dumps(line).encode() + b"\n" for line in lines)) and os.close(write_end))
    writer.start()
    try:
        output = tmp_path / "out.jsonl"
        assert predict_file(str(text_run), f"/dev/fd/{read_end}", str(output), batch_size=2, silent=True) == 0
    finally:
        writer.join()
        os.close(read_end)
    assert [answer["id"] for answer in _strict_lines(output)] == list(range(5))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_is_read_as_stdin_is(text_run, tmp_path):
    fifo = tmp_path / "lines"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w", encoding="utf-8") as handle:
            handle.write('{"tokens": ["a"]}\n{"tokens": ["b", "c"]}\n')

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    output = tmp_path / "out.jsonl"
    try:
        assert predict_file(str(text_run), str(fifo), str(output), silent=True) == 0
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # frees the writer, whatever happened
        writer.join(timeout=10)
    assert [len(answer["tags"]) for answer in _strict_lines(output)] == [1, 2]


def test_an_input_folder_is_a_clear_error(text_run, tmp_path, capsys):
    line = one_error_line(["predict", str(text_run), str(tmp_path)], capsys)
    assert f"{tmp_path} is a folder, not a file or a pipe" in line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_an_output_that_cannot_be_written_names_its_path(text_run, tmp_path, capsys):
    source = _write_lines(tmp_path / "in.jsonl", [{"tokens": ["a"]}])
    line = one_error_line(["predict", str(text_run), str(source), "--output-file", "/dev/full", "--silent"], capsys)
    assert "Cannot write --output-file /dev/full" in line and "No space left on device" in line
