import shutil

import pytest

from fmit_plugin.data.dataset_fingerprint import (
    KNOWN_VERSIONS,
    KnownDatasetVersion,
    file_sha256,
    fingerprint_dataset,
)
from fmit_plugin.data.twitter_mner import TwitterMnerReader
from tests.conftest import TWITTER_FIXTURES


def _fingerprint(path, known_versions=None):
    return fingerprint_dataset(path, TwitterMnerReader().read(str(path)), known_versions)


def test_fingerprint_counts_tweets_tokens_entities_and_tags():
    fingerprint = _fingerprint(TWITTER_FIXTURES / "train.txt")
    instances = TwitterMnerReader().read(str(TWITTER_FIXTURES / "train.txt"))
    assert fingerprint.tweets == len(instances)
    assert fingerprint.tokens == sum(len(i.words) for i in instances)
    assert fingerprint.tags == {tag: sum(i.tags.count(tag) for i in instances)
                                for tag in sorted({t for i in instances for t in i.tags})}
    begins = sum(tag.startswith("B-") for i in instances for tag in i.tags)
    # the fixture opens every entity with B-: one entity per B- tag
    assert fingerprint.entities == sum(fingerprint.entities_by_type.values()) == begins
    assert fingerprint.sha256 == file_sha256(TWITTER_FIXTURES / "train.txt")
    assert fingerprint.bytes == (TWITTER_FIXTURES / "train.txt").stat().st_size
    assert fingerprint.known_version is None


def test_fingerprint_is_stable_and_one_changed_byte_changes_it(tmp_path):
    copy = tmp_path / "train.txt"
    shutil.copyfile(TWITTER_FIXTURES / "train.txt", copy)
    first, second = _fingerprint(copy), _fingerprint(copy)
    assert first.to_json() == second.to_json()
    data = bytearray(copy.read_bytes())
    index = data.index(b"\t") - 1  # the last character of the first token: counts stay the same
    data[index] = ord("Z") if data[index] != ord("Z") else ord("Y")
    copy.write_bytes(bytes(data))
    changed = _fingerprint(copy)
    assert changed.sha256 != first.sha256
    assert (changed.tweets, changed.tokens, changed.entities) == (first.tweets, first.tokens, first.entities)


def test_known_version_matches_by_hash_then_by_counts(tmp_path):
    fixture = TWITTER_FIXTURES / "valid.txt"
    counted = _fingerprint(fixture)
    by_hash = KnownDatasetVersion("fixture valid (test-only)", counted.tweets, counted.entities_by_type,
                                  sha256=counted.sha256, source="tests")
    assert _fingerprint(fixture, [by_hash]).known_version == {
        "name": "fixture valid (test-only)", "match": "sha256", "source": "tests"}
    # Another file with the same tweets and entities (one token changed) matches by its counts only.
    other = tmp_path / "valid.txt"
    other.write_bytes(fixture.read_bytes().replace(b"\t", b"x\t", 1))
    matched = _fingerprint(other, [by_hash])
    assert matched.known_version is not None and matched.known_version["match"] == "counts"
    assert "counts" in matched.describe() and matched.sha256 in matched.describe()
    # Different entity counts: no version.
    other_counts = KnownDatasetVersion("other", counted.tweets, {"PER": 999})
    assert _fingerprint(other, [other_counts]).known_version is None


def test_hash_only_fingerprint_without_instances_matches_by_hash():
    fixture = TWITTER_FIXTURES / "test.txt"
    version = KnownDatasetVersion("fixture test", 0, {}, sha256=file_sha256(fixture))
    fingerprint = fingerprint_dataset(fixture, None, [version])
    assert fingerprint.tweets is None and fingerprint.known_version["match"] == "sha256"
    assert fingerprint_dataset(fixture, None, [KnownDatasetVersion("x", 0, {})]).known_version is None


@pytest.mark.parametrize("split, name", [
    ("twitter2015/test.txt", "Twitter-2015 test (UMT release)"),
    ("twitter2017/valid.txt", "Twitter-2017 validation (UMT release)"),
])
def test_the_shared_release_files_are_known_versions(shared_data, tmp_path, split, name):
    copy = tmp_path / "copy.txt"
    shutil.copyfile(shared_data / split, copy)
    fingerprint = fingerprint_dataset(copy, TwitterMnerReader().read(str(copy)))
    assert fingerprint.known_version["name"] == name and fingerprint.known_version["match"] == "sha256"
    version = next(v for v in KNOWN_VERSIONS if v.name == name)
    assert (fingerprint.tweets, fingerprint.tokens, fingerprint.entities_by_type) == (
        version.tweets, version.tokens, version.entities_by_type)
