import logging
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.dataset_reader import DatasetReader
from fmit_plugin.data.twitter_mner import MalformedDataError, TwitterMnerReader

# the same folder as conftest.TWITTER_FIXTURES (not imported: tests/ is no package)
TWITTER_FIXTURES = Path(__file__).parents[1] / "fixtures" / "twitter_mner"

LOGGER = "fmit_plugin.data.twitter_mner"
TRAIN = TWITTER_FIXTURES / "train.txt"
VALID = TWITTER_FIXTURES / "valid.txt"
ALLOWED_TAGS = {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "MISC")}

GOOD = "IMGID:1\nParis\tB-LOC\nis\tO\nnice\tO\n\nIMGID:2\nObama\tB-PER\nspoke\tO\n\nIMGID:3\nhi\tO\n"


def _write(tmp_path: Path, text: str, name: str = "data.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def _tiny_image(path: Path) -> None:
    Image.new("RGB", (2, 2), color=(255, 0, 0)).save(path)


# ------------------------------------------------------------------ the fixture files


def test_reads_fixture_train_file():
    reader = TwitterMnerReader()
    instances = reader.read(str(TRAIN))
    assert len(instances) == 12
    assert [i.image_id for i in instances] == [str(n) for n in range(101, 113)]
    assert [len(i) for i in instances] == [9, 8, 7, 7, 8, 7, 6, 7, 7, 6, 7, 5]
    assert sum(len(i.tags) for i in instances) == 84
    first = instances[0]
    assert first.words == ["RT", "@maria_k", ":", "George", "Zimmerman", "spotted", "in", "Sanford", "today"]
    assert first.tags == ["O", "O", "O", "B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    assert first.image_path is None  # no image_dir
    # "file:line" of each tweet's IMGID line
    starts = [1, 12, 22, 31, 40, 50, 59, 67, 76, 85, 93, 102]
    assert [i.metadata["source"] for i in instances] == [f"{TRAIN}:{n}" for n in starts]
    stats = reader.last_statistics
    assert (stats.tweets, stats.malformed_lines, stats.skipped_tweets, stats.empty_tweets) == (12, 0, 0, 0)
    # emoji and URL tokens survive untouched
    assert instances[5].words[-1] == "😀"
    assert instances[10].words[-1] == "http://t.co/abc"


def test_reader_is_registered():
    reader = DatasetReader.by_name("twitter_mner")()
    assert isinstance(reader, TwitterMnerReader)
    assert len(reader.read(str(VALID))) == 4


def test_statistics_are_reset_per_read():
    reader = TwitterMnerReader()
    reader.read(str(TRAIN))
    reader.read(str(VALID))
    assert reader.last_statistics.tweets == 4


def test_other_is_mapped_to_misc_by_default():
    instances = TwitterMnerReader().read(str(TRAIN))
    tags = Counter(t for i in instances for t in i.tags)
    assert not any("OTHER" in t for t in tags)
    assert tags["B-MISC"] == 3 and tags["I-MISC"] == 1
    assert instances[2].tags == ["O", "O", "B-MISC", "I-MISC", "O", "O", "B-ORG"]


def test_other_kept_without_mapping():
    instances = TwitterMnerReader(map_other_to_misc=False).read(str(TRAIN))
    tags = Counter(t for i in instances for t in i.tags)
    assert tags["B-OTHER"] == 3 and tags["I-OTHER"] == 1
    assert "B-MISC" not in tags and "I-MISC" not in tags


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TwitterMnerReader().read(str(tmp_path / "nope.txt"))


# ------------------------------------------------------------------ malformed input


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("spoke\tO\textra", "2 tab-separated columns"),
        ("spoke", "2 tab-separated columns"),
        ("spoke\tX-PER", "X-PER"),
        ("spoke\tPER", "PER"),
        ("spoke\tB-", "B-"),
        ("\tO", "empty token"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, expected):
    text = GOOD.replace("spoke\tO", bad_line)
    path = _write(tmp_path, text)
    with pytest.raises(MalformedDataError) as info:
        TwitterMnerReader().read(str(path))
    message = str(info.value)
    # "spoke" is on line 8 of GOOD
    assert f"{path}:8:" in message
    assert expected in message
    assert isinstance(info.value, ValueError)


def test_token_before_first_imgid_is_malformed(tmp_path):
    path = _write(tmp_path, "stray\tO\n" + GOOD)
    with pytest.raises(MalformedDataError, match=rf"{path}:1: token line without an IMGID line"):
        TwitterMnerReader().read(str(path))


def test_token_after_blank_without_imgid_is_malformed(tmp_path):
    path = _write(tmp_path, "IMGID:1\na\tO\n\nstray\tO\n")
    with pytest.raises(MalformedDataError, match=rf"{path}:4:"):
        TwitterMnerReader().read(str(path))


def test_line_numbers_are_exact_further_down(tmp_path):
    lines = GOOD.splitlines()
    lines.insert(11, "bad\tI_LOC")  # becomes line 12, inside tweet 3
    path = _write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(MalformedDataError) as info:
        TwitterMnerReader().read(str(path))
    assert f"{path}:12:" in str(info.value)
    assert "I_LOC" in str(info.value)


def test_skip_malformed_skips_only_the_bad_tweet(tmp_path, caplog):
    text = GOOD.replace("spoke\tO", "spoke\tX-PER").replace("is\tO", "is\tO\tO")
    path = _write(tmp_path, text)
    reader = TwitterMnerReader(skip_malformed=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instances = reader.read(str(path))
    assert [i.image_id for i in instances] == ["3"]
    assert instances[0].words == ["hi"]
    stats = reader.last_statistics
    assert stats.malformed_lines == 2
    assert stats.skipped_tweets == 2
    assert stats.tweets == 1
    assert len(stats.problems) == 2
    assert stats.problems[0].startswith(f"{path}:3:")
    assert stats.problems[1].startswith(f"{path}:8:")
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2 tweets over 2 malformed lines" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


def test_skip_malformed_two_bad_lines_in_one_tweet(tmp_path):
    text = GOOD.replace("is\tO", "is\tOO").replace("nice\tO", "nice\tB_LOC")
    reader = TwitterMnerReader(skip_malformed=True)
    instances = reader.read(str(_write(tmp_path, text)))
    assert [i.image_id for i in instances] == ["2", "3"]
    assert reader.last_statistics.malformed_lines == 2
    assert reader.last_statistics.skipped_tweets == 1


def test_skip_malformed_stray_lines_before_imgid_do_not_drop_next_tweet(tmp_path):
    reader = TwitterMnerReader(skip_malformed=True)
    instances = reader.read(str(_write(tmp_path, "stray\tO\nmore\tO\n" + GOOD)))
    assert [i.image_id for i in instances] == ["1", "2", "3"]
    assert reader.last_statistics.malformed_lines == 2
    # the stray block is one tweet whose IMGID line is missing: dropped, and counted as such
    assert reader.last_statistics.skipped_tweets == 1


def test_no_warning_for_clean_file(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        TwitterMnerReader().read(str(TRAIN))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------ encodings, empties, limits


def _read_all(path):
    return [(i.words, i.tags, i.image_id, i.metadata["source"].rsplit(":", 1)[1])
            for i in TwitterMnerReader().read(str(path))]


def test_crlf_and_bom_read_like_lf(tmp_path):
    text = TRAIN.read_text(encoding="utf-8")
    lf = _read_all(_write(tmp_path, text, "lf.txt"))
    crlf_path = _write(tmp_path, text.replace("\n", "\r\n"), "crlf.txt")
    assert b"\r\n" in crlf_path.read_bytes()
    bom_path = tmp_path / "bom.txt"
    bom_path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    assert len(lf) == 12
    assert _read_all(crlf_path) == lf
    assert _read_all(bom_path) == lf
    # no stray "\r" or BOM leaks into tokens, tags or ids
    for words, tags, image_id, _ in _read_all(bom_path):
        assert all("\r" not in w and "\ufeff" not in w for w in words + tags + [image_id])


def test_empty_tweet_is_an_error_or_a_counted_skip(tmp_path, caplog):
    text = "IMGID:1\na\tO\n\nIMGID:2\n\nIMGID:3\nIMGID:4\nb\tB-PER\n"
    path = _write(tmp_path, text)
    with pytest.raises(MalformedDataError, match=rf"{path}:4: IMGID:2 has no token lines"):
        TwitterMnerReader().read(str(path))
    reader = TwitterMnerReader(skip_malformed=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instances = reader.read(str(path))
    assert [i.image_id for i in instances] == ["1", "4"]
    assert reader.last_statistics.empty_tweets == 2
    assert reader.last_statistics.tweets == 2
    assert any("IMGID:2 has no token lines" in p for p in reader.last_statistics.problems)
    assert any("IMGID:3 has no token lines" in p for p in reader.last_statistics.problems)
    assert any("2 empty tweets" in r.getMessage() for r in caplog.records)


def test_file_without_trailing_newline_or_blank(tmp_path):
    instances = TwitterMnerReader().read(str(_write(tmp_path, "IMGID:9\nx\tO\ny\tB-ORG")))
    assert len(instances) == 1
    assert instances[0].tags == ["O", "B-ORG"]


def test_multiple_blank_lines_between_tweets(tmp_path):
    instances = TwitterMnerReader().read(str(_write(tmp_path, "IMGID:1\nx\tO\n\n\n\nIMGID:2\ny\tO\n\n")))
    assert [i.image_id for i in instances] == ["1", "2"]


def test_max_instances(tmp_path):
    reader = TwitterMnerReader(max_instances=3)
    instances = reader.read(str(TRAIN))
    assert [i.image_id for i in instances] == ["101", "102", "103"]
    assert len(TwitterMnerReader(max_instances=100).read(str(TRAIN))) == 12
    with pytest.raises(ConfigurationError, match="max_instances"):
        TwitterMnerReader(max_instances=0)


# ------------------------------------------------------------------ images


def test_image_dir_sets_paths_and_warns_once(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    _tiny_image(images / "101.jpg")
    _tiny_image(images / "105.jpg")
    _tiny_image(images / "110.png")
    reader = TwitterMnerReader(image_dir=str(images))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instances = reader.read(str(TRAIN))
    paths = {i.image_id: i.image_path for i in instances}
    assert paths["101"] == str(images / "101.jpg")
    assert paths["105"] == str(images / "105.jpg")
    assert paths["110"] == str(images / "110.png")
    assert all(paths[k] is None for k in paths if k not in {"101", "105", "110"})
    assert reader.last_statistics.missing_images == 9
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "9 of 12 tweets" in message
    assert str(TRAIN) in message
    # a second file gives its own single warning with its own count
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        reader.read(str(VALID))
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "4 of 4 tweets" in warnings[0].getMessage()


def test_image_dir_with_all_images_does_not_warn(tmp_path, caplog):
    for n in range(113, 117):
        _tiny_image(tmp_path / f"{n}.jpg")
    reader = TwitterMnerReader(image_dir=str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        instances = reader.read(str(VALID))
    assert all(i.image_path == str(tmp_path / f"{i.image_id}.jpg") for i in instances)
    assert reader.last_statistics.missing_images == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_image_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="image_dir"):
        TwitterMnerReader(image_dir=str(tmp_path / "does_not_exist"))


def test_text_to_instance_with_image_path_and_id(tmp_path):
    image = tmp_path / "555.jpg"
    _tiny_image(image)
    reader = TwitterMnerReader(image_dir=str(tmp_path))
    by_path = reader.text_to_instance(["a"], image=str(image))
    assert (by_path.image_id, by_path.image_path) == ("555", str(image))
    by_id = reader.text_to_instance(["a"], image="555")
    assert (by_id.image_id, by_id.image_path) == ("555", str(image))
    absent = reader.text_to_instance(["a"], image="777")
    assert (absent.image_id, absent.image_path) == ("777", None)
    no_image = reader.text_to_instance(["a"], ["O"])
    assert (no_image.image_id, no_image.image_path, no_image.tags) == (None, None, ["O"])


# ------------------------------------------------------------------ the real data sets


def _real(shared_data: Path, name: str, split: str = "train"):
    path = shared_data / name / f"{split}.txt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    reader = TwitterMnerReader()
    return reader, reader.read(str(path))


def _ill_formed_inside(tags):
    return sum(1 for prev, tag in zip(["O", *tags], tags) if tag.startswith("I-") and prev == "O")


@pytest.mark.parametrize(("name", "count"), [("twitter2015", 4000), ("twitter2017", 3373)])
def test_real_train_sets(shared_data, name, count):
    reader, instances = _real(shared_data, name)
    assert len(instances) == count
    assert reader.last_statistics.tweets == count
    assert reader.last_statistics.malformed_lines == 0
    tags = Counter(t for i in instances for t in i.tags)
    assert set(tags) <= ALLOWED_TAGS
    assert {t for t in tags if t != "O"} == ALLOWED_TAGS - {"O"}
    assert all(len(i.words) == len(i.tags) > 0 for i in instances)
    assert all(i.image_id for i in instances)


def test_real_2015_keeps_ill_formed_inside_tags(shared_data):
    _, instances = _real(shared_data, "twitter2015")
    ill_formed = [i for i in instances if _ill_formed_inside(i.tags)]
    assert ill_formed, "Twitter-2015 train is known to hold I- tags right after O"
    # the reader keeps them exactly as in the file (OTHER renamed only)
    raw = TwitterMnerReader(map_other_to_misc=False).read(str(shared_data / "twitter2015" / "train.txt"))
    by_source = {i.metadata["source"]: i for i in raw}
    for instance in ill_formed:
        original = by_source[instance.metadata["source"]].tags
        assert instance.tags == [t.replace("OTHER", "MISC") for t in original]
    # and it's visible in the source text at the recorded line
    instance = ill_formed[0]
    line = int(instance.metadata["source"].rsplit(":", 1)[1])
    lines = (shared_data / "twitter2015" / "train.txt").read_text(encoding="utf-8-sig").splitlines()
    block = lines[line : line + len(instance.words)]
    assert [row.split("\t")[0] for row in block] == instance.words
