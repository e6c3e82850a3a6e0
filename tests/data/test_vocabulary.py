import pytest
from tango.common.exceptions import ConfigurationError

from fmit_plugin.data.instance import TaggingInstance
from fmit_plugin.data.vocabulary import Vocabulary


def _instance(tags):
    return TaggingInstance(words=[f"w{i}" for i in range(len(tags))], tags=tags)


def test_from_instances_orders_o_first_then_by_frequency_then_name():
    instances = [
        _instance(["B-PER", "I-PER", "I-PER", "B-LOC"]),
        _instance(["I-PER", "B-LOC", "O"]),
        _instance(["B-ORG", "B-MISC"]),
        TaggingInstance(words=["untagged"]),  # no gold tags: ignored
    ]
    vocab = Vocabulary.from_instances(instances)
    # I-PER x3, B-LOC x2, then the x1 labels by name; "O" (x1) first regardless
    assert vocab.get_index_to_token_vocabulary() == dict(
        enumerate(["O", "I-PER", "B-LOC", "B-MISC", "B-ORG", "B-PER"])
    )
    assert vocab.get_token_index("O") == 0
    assert vocab.get_vocab_size() == 6
    assert vocab.namespaces() == ["labels"]


def test_from_instances_o_first_even_when_absent_elsewhere_and_custom_namespace():
    vocab = Vocabulary.from_instances([_instance(["B-X", "B-X", "B-Y"])], label_namespace="tags")
    assert vocab.get_index_to_token_vocabulary("tags") == {0: "B-X", 1: "B-Y"}
    with pytest.raises(ConfigurationError, match="no namespace 'labels'"):
        vocab.get_vocab_size()


def test_from_instances_without_tags_is_an_error():
    with pytest.raises(ConfigurationError, match="No gold tags"):
        Vocabulary.from_instances([TaggingInstance(words=["a"])])


def test_index_lookups_are_inverse():
    vocab = Vocabulary({"labels": ["O", "B-PER", "I-PER"], "boundary_labels": ["O", "B", "I"]})
    for namespace in vocab.namespaces():
        for token, index in vocab.get_token_to_index_vocabulary(namespace).items():
            assert vocab.get_token_from_index(index, namespace) == token
            assert vocab.get_token_index(token, namespace) == index
    assert vocab.get_token_index("I-PER") == 2
    assert vocab.get_token_index("I", "boundary_labels") == 2


def test_token_to_index_copy_does_not_alias_internal_state():
    vocab = Vocabulary({"labels": ["O", "B-PER"]})
    mapping = vocab.get_token_to_index_vocabulary()
    mapping["X"] = 7
    with pytest.raises(KeyError):
        vocab.get_token_index("X")


def test_save_and_load_round_trip(tmp_path):
    vocab = Vocabulary({"labels": ["O", "B-PER", "I-PER", "B-MISC"], "boundary_labels": ["O", "B", "I"]})
    vocab.save_to_files(tmp_path / "vocabulary")
    assert (tmp_path / "vocabulary" / "labels.txt").read_text(encoding="utf-8") == "O\nB-PER\nI-PER\nB-MISC\n"
    loaded = Vocabulary.from_files(tmp_path / "vocabulary")
    assert loaded == vocab
    assert loaded.get_index_to_token_vocabulary() == vocab.get_index_to_token_vocabulary()
    assert loaded.get_token_index("B-MISC") == 3
    assert loaded != Vocabulary({"labels": ["O", "I-PER", "B-PER", "B-MISC"]})


def test_from_files_on_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match="No vocabulary files"):
        Vocabulary.from_files(tmp_path)


def test_unknown_label_error_lists_known_labels():
    vocab = Vocabulary({"labels": ["O", "B-PER", "I-PER"]})
    with pytest.raises(KeyError) as info:
        vocab.get_token_index("B-LOC")
    message = str(info.value)
    assert "B-LOC" in message
    assert "'labels'" in message
    assert "O, B-PER, I-PER" in message


def test_missing_namespace_error_names_it_and_the_known_ones():
    vocab = Vocabulary({"labels": ["O"]})
    for call in (
        lambda: vocab.get_vocab_size("boundary_labels"),
        lambda: vocab.get_token_index("O", "boundary_labels"),
        lambda: vocab.get_token_from_index(0, "boundary_labels"),
        lambda: vocab.get_index_to_token_vocabulary("boundary_labels"),
        lambda: vocab.get_token_to_index_vocabulary("boundary_labels"),
    ):
        with pytest.raises(ConfigurationError, match=r"no namespace 'boundary_labels' \(has: labels\)"):
            call()


def test_duplicate_labels_rejected():
    with pytest.raises(ConfigurationError, match="Duplicate"):
        Vocabulary({"labels": ["O", "B-PER", "O"]})
