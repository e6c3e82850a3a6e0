"""
The Twitter MNER reader under malformed, hostile and random input (issue 8): every malformed case is
an error naming file and line, or, with `skip_malformed`, a counted and reported skip; nothing is
dropped without a count. Regression files live in tests/fixtures/bad_input/reader/.
"""
import logging
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fmit_plugin.data.twitter_mner import MalformedDataError, TwitterMnerReader

READER_FIXTURES = Path(__file__).parents[1] / "fixtures" / "bad_input" / "reader"
LOGGER = "fmit_plugin.data.twitter_mner"
GOOD_TWEETS = [
    ("101", ["Obama", "visits", "Paris"], ["B-PER", "O", "B-LOC"]),
    ("102", ["RT", "@bob", ":", "New", "York"], ["O", "O", "O", "B-LOC", "I-LOC"]),
    ("103", ["hello", "world"], ["O", "O"]),
]


def _read(path: Path, **kwargs):
    reader = TwitterMnerReader(**kwargs)
    instances = reader.read(str(path))
    return reader, [(i.image_id, i.words, i.tags) for i in instances]


# ------------------------------------------------------------------ regression files


@pytest.mark.parametrize("name", ["good.txt", "crlf.txt", "bom.txt"])
def test_line_ends_and_byte_order_mark_read_alike(name):
    path = READER_FIXTURES / name
    if name != "good.txt":
        assert b"\r\n" in path.read_bytes()
    assert path.read_bytes().startswith(b"\xef\xbb\xbf") == (name == "bom.txt")
    reader, tweets = _read(path)
    assert tweets == GOOD_TWEETS
    assert reader.last_statistics.tweets == 3
    # line numbers count the same way whatever the line ends
    sources = [i.metadata["source"].rsplit(":", 1)[1] for i in TwitterMnerReader().read(str(path))]
    assert sources == ["1", "6", "13"]


def test_spaces_around_a_label_are_accepted():
    _, tweets = _read(READER_FIXTURES / "label_spaces.txt")
    assert tweets == [GOOD_TWEETS[0], GOOD_TWEETS[2]]


# file, line of the problem, what the message says, and under skip_malformed: the image ids kept and
# (malformed lines, skipped tweets, empty tweets, skipped lines)
MALFORMED = [
    ("wrong_columns.txt", 8, r"found 1 \(no tab between token and label\)", ["101", "103"], (1, 1, 0, 4)),
    ("tab_in_token.txt", 8, r"found 3 \(a tab inside the token\?\)", ["101", "103"], (1, 1, 0, 3)),
    ("unknown_label.txt", 8, r"label 'B_LOC' is not O, B-TYPE or I-TYPE", ["101", "103"], (1, 1, 0, 3)),
    ("empty_tweet.txt", 6, r"IMGID:102 has no token lines \(empty tweet\)", ["101", "103"], (0, 0, 1, 1)),
    ("missing_imgid.txt", 6, r"token line without an IMGID line", ["101", "103"], (2, 1, 0, 2)),
    ("duplicate_imgid.txt", 6, r"IMGID '101' already appeared on line 1", ["101", "103"], (1, 1, 0, 2)),
    ("not_utf8.txt", 7, r"not UTF-8 \(byte 0xe9 at column 4\)", ["101", "103"], (1, 1, 0, 2)),
    ("imgid_path.txt", 6, r"IMGID '\.\./\.\./etc/passwd' is not a plain file name", ["101", "103"], (1, 1, 0, 2)),
    ("imgid_empty.txt", 6, r"IMGID line without an id", ["101", "103"], (1, 1, 0, 2)),
    # the tweet before the stray "IMGID:5<TAB>O" token line is kept; that line is counted
    ("token_named_imgid.txt", 8, r"IMGID line with a tab", ["101", "102", "103"], (1, 1, 0, 1)),
]


@pytest.mark.parametrize(("name", "line", "message", "kept", "counts"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_is_an_error_naming_file_and_line(name, line, message, kept, counts):
    path = READER_FIXTURES / name
    with pytest.raises(MalformedDataError) as info:
        TwitterMnerReader().read(str(path))
    text = str(info.value)
    assert text.startswith(f"{path}:{line}: "), text
    assert re.search(message, text), text
    assert "\n" not in text
    # the CLI prints ValueErrors as one line and exits 2
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("name", "line", "message", "kept", "counts"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_is_a_counted_and_reported_skip_when_lenient(name, line, message, kept, counts, caplog):
    path = READER_FIXTURES / name
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reader, tweets = _read(path, skip_malformed=True)
    assert [image_id for image_id, _, _ in tweets] == kept
    stats = reader.last_statistics
    assert (stats.malformed_lines, stats.skipped_tweets, stats.empty_tweets, stats.skipped_lines) == counts
    assert stats.tweets == len(kept)
    assert stats.problems and stats.problems[0].startswith(f"{path}:{line}: ")
    # nothing dropped without a count: every non-blank line is in a kept tweet or counted as skipped
    non_blank = sum(1 for raw in path.read_bytes().splitlines() if raw.strip())
    assert sum(1 + len(words) for _, words, _ in tweets) + stats.skipped_lines == non_blank
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and f"{path}:{line}:" in warnings[0]


def test_duplicate_image_ids_can_be_kept_and_counted(caplog):
    path = READER_FIXTURES / "duplicate_imgid.txt"
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reader, tweets = _read(path, allow_duplicate_image_ids=True)
    assert [t[0] for t in tweets] == ["101", "101", "103"]
    assert tweets[1][1] == ["again"]
    assert reader.last_statistics.duplicate_image_ids == 1
    assert reader.last_statistics.malformed_lines == 0
    assert any("kept 1 tweets whose IMGID appeared before" in r.getMessage() for r in caplog.records)


def test_unseen_type_is_read_and_left_to_evaluation():
    # B-EVENT is well formed: training builds its vocabulary from the data; evaluation against a
    # model that never saw EVENT fails naming it (tests/commands/test_bad_input_cli.py).
    _, tweets = _read(READER_FIXTURES / "unseen_type.txt")
    assert tweets[1] == ("102", ["at", "Coachella"], ["O", "B-EVENT"])


def test_real_data_has_no_duplicate_ids_or_empty_tweets(shared_data):
    for path in sorted(shared_data.glob("twitter20*/*.txt")):
        reader = TwitterMnerReader()
        reader.read(str(path))  # strict by default: would raise on any of the cases above
        stats = reader.last_statistics
        assert (stats.malformed_lines, stats.skipped_tweets, stats.empty_tweets, stats.duplicate_image_ids) == (0,) * 4


def test_stream_gives_the_same_instances_and_statistics_as_read():
    path = READER_FIXTURES / "missing_imgid.txt"
    reader = TwitterMnerReader(skip_malformed=True)
    listed = [(i.image_id, i.words) for i in reader.read(str(path))]
    listed_stats = reader.last_statistics
    streamed = reader.stream(str(path))
    first = next(streamed)
    assert (first.image_id, first.words) == listed[0]
    rest = [(i.image_id, i.words) for i in streamed]
    assert [listed[0], *rest] == listed
    assert reader.last_statistics == listed_stats


def test_image_ids_are_looked_up_only_inside_image_dir(tmp_path, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    (images / "1.5.jpg").write_bytes(b"x")
    (tmp_path / "secret.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)  # an id that is a file in the working directory must not match it
    data = tmp_path / "data.txt"
    data.write_text("IMGID:1.5\na\tO\n\nIMGID:secret.jpg\nb\tO\n\nIMGID:" + "n" * 5000 + "\nc\tO\n", encoding="utf-8")
    reader = TwitterMnerReader(image_dir=str(images))
    instances = reader.read(str(data))
    assert [(i.image_id, i.image_path) for i in instances[:2]] == [("1.5", str(images / "1.5.jpg")), ("secret", None)]
    assert instances[2].image_path is None  # a name too long for the file system is just missing
    assert reader.last_statistics.missing_images == 2


# ------------------------------------------------------------------ properties


# Any character a token can hold: everything but tab and the line breaks of text mode.
TOKEN_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\t\n\r")
TOKENS = st.text(TOKEN_CHARACTERS, min_size=1, max_size=12).filter(lambda t: not t.startswith("IMGID:"))
LABELS = st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-OTHER", "I-MISC", "B-X\u00e9"])


@st.composite
def tweet_files(draw):
    """Well-formed files: random Unicode tokens, random line ends, optional BOM, extra blank lines."""
    tweets = []
    for number in range(draw(st.integers(1, 6))):
        words = draw(st.lists(TOKENS, min_size=1, max_size=8))
        tags = draw(st.lists(LABELS, min_size=len(words), max_size=len(words)))
        tweets.append((f"id{number}", words, tags))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    separators = draw(st.lists(st.integers(1, 3), min_size=len(tweets), max_size=len(tweets)))
    text = ""
    for (image_id, words, tags), blanks in zip(tweets, separators):
        text += f"IMGID:{image_id}{newline}"
        text += "".join(f"{w}\t{t}{newline}" for w, t in zip(words, tags))
        text += newline * blanks
    bom = draw(st.booleans())
    return tweets, (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8")


def _expected(tweets):
    return [(i, w, [t.replace("-OTHER", "-MISC") for t in tags]) for i, w, tags in tweets]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tweet_files())
def test_property_well_formed_files_read_exactly(tmp_path, case):
    tweets, data = case
    path = tmp_path / "data.txt"
    path.write_bytes(data)
    reader, read = _read(path)
    assert read == _expected(tweets)
    for _, words, tags in read:
        assert len(words) == len(tags)
    assert reader.last_statistics.tweets == len(tweets)


BAD_LINES = st.one_of(
    st.builds(lambda t: f"{t}\t{t}\t{t}", TOKENS),  # three columns
    TOKENS.filter(lambda t: t.strip() and not t.startswith("IMGID:")),  # one column
    st.builds(lambda t: f"{t}\tB_{t}", TOKENS),  # label outside BIO
    st.just("\tO"),  # empty token
).filter(lambda line: line.strip())  # a line of white space only (tabs included) is a blank line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=tweet_files(), bad=BAD_LINES, where=st.integers(0, 10_000))
def test_property_one_bad_line_is_named_or_counted(tmp_path, case, bad, where):
    tweets, data = case
    # text mode breaks lines only at \n, \r and \r\n (str.splitlines also breaks at \x0b, \u2028...)
    lines = re.split(r"\r\n|\n", data.decode("utf-8-sig"))[:-1]
    token_lines = [n for n, line in enumerate(lines) if "\t" in line]
    target = token_lines[where % len(token_lines)]
    lines[target] = bad
    path = tmp_path / "data.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(MalformedDataError, match=rf"^{re.escape(str(path))}:{target + 1}: "):
        TwitterMnerReader().read(str(path))
    reader, read = _read(path, skip_malformed=True)
    stats = reader.last_statistics
    assert (stats.malformed_lines, stats.skipped_tweets) == (1, 1)
    assert len(read) == len(tweets) - 1 == stats.tweets
    # the tweets read are exactly the others, in order
    kept = [t for t in _expected(tweets) if t[0] in {r[0] for r in read}]
    assert read == kept


# ------------------------------------------------------------------ fuzz

LINE_KINDS = ["imgid", "token", "token", "token", "blank", "three_columns", "one_column", "bad_label",
              "empty_token", "dup_imgid", "bytes", "empty_imgid", "path_imgid"]


def _fuzz_file(rng: random.Random) -> bytes:
    ids = [str(rng.randrange(50)) for _ in range(3)]
    parts: list[bytes] = []
    for _ in range(rng.randrange(0, 25)):
        kind = rng.choice(LINE_KINDS)
        word = "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0x2FFF),
                                       rng.randrange(0x1F300, 0x1FAFF)])) for _ in range(rng.randrange(1, 6)))
        word = word.replace("\t", "x")
        line = {
            "imgid": f"IMGID:{rng.choice(ids)}{rng.randrange(10_000)}",
            "dup_imgid": f"IMGID:{ids[0]}",
            "empty_imgid": "IMGID:",
            "path_imgid": "IMGID:a/b",
            "token": f"{word}\t{rng.choice(['O', 'B-PER', 'I-LOC'])}",
            "blank": rng.choice(["", " ", "\t"]),
            "three_columns": f"{word}\tO\tO",
            "one_column": word,
            "bad_label": f"{word}\tPER",
            "empty_token": "\tO",
            "bytes": "",
        }[kind]
        if kind == "bytes":
            encoded = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            encoded = line.encode("utf-8")
        parts.append(encoded.replace(b"\n", b" ").replace(b"\r", b" "))
    return (b"\xef\xbb\xbf" if rng.random() < 0.1 else b"") + rng.choice([b"\n", b"\r\n"]).join(parts)


def test_fuzz_reader_never_crashes_and_counts_everything(tmp_path):
    """3000 random files of good and bad lines (random Unicode, random bytes): the strict reader
    returns or raises `MalformedDataError` naming the file and a line that exists; the lenient
    reader never raises, and every non-blank line is in a returned tweet or counted as skipped."""
    rng = random.Random(8)
    path = tmp_path / "fuzz.txt"
    outcomes = {"read": 0, "error": 0}
    for case in range(3000):
        data = _fuzz_file(rng)
        path.write_bytes(data)
        lines = re.split(r"\r\n|\r|\n", data.decode("utf-8", "surrogateescape").removeprefix("\ufeff"))
        if lines and lines[-1] == "":
            lines.pop()
        try:
            strict = TwitterMnerReader().read(str(path))
            outcomes["read"] += 1
        except MalformedDataError as error:
            outcomes["error"] += 1
            found = re.match(rf"^{re.escape(str(path))}:(\d+): ", str(error))
            assert found, (case, str(error))
            assert 1 <= int(found.group(1)) <= len(lines), (case, str(error), len(lines))
            strict = None
        lenient = TwitterMnerReader(skip_malformed=True)
        instances = lenient.read(str(path))
        stats = lenient.last_statistics
        non_blank = sum(1 for line in lines if line.strip())
        assert sum(1 + len(i.words) for i in instances) + stats.skipped_lines == non_blank, case
        assert stats.tweets == len(instances)
        assert all(len(i.words) == len(i.tags) > 0 for i in instances)
        if strict is not None:  # a file the strict reader accepts loses nothing when lenient
            assert [i.words for i in strict] == [i.words for i in instances]
            assert stats.skipped_lines == 0
    assert outcomes["read"] > 100 and outcomes["error"] > 1000, outcomes
