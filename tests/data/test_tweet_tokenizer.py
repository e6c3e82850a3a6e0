import pytest

from fmit_plugin.data.tweet_tokenizer import tokenize_tweet


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        # the docstring example
        ("RT @user: Flying to Paris!", ["RT", "@user", ":", "Flying", "to", "Paris", "!"]),
        # URLs stay whole, query strings and all
        ("see https://t.co/xYz?a=1&b=2 now", ["see", "https://t.co/xYz?a=1&b=2", "now"]),
        ("http://t.co/abc", ["http://t.co/abc"]),
        ("go to www.example.com/path today", ["go", "to", "www.example.com/path", "today"]),
        # @users and #tags stay whole, underscores and digits included; trailing punctuation splits
        ("@john_doe, #SuperBowl50 #NFL!", ["@john_doe", ",", "#SuperBowl50", "#NFL", "!"]),
        ("RT@user", ["RT", "@user"]),
        # punctuation stands alone, one character each, except ellipses and emoticons (kept whole,
        # as the Twitter MNER files have them)
        ("Hello...world", ["Hello", "...", "world"]),
        ("so good :) yes", ["so", "good", ":)", "yes"]),
        ("Paris:Day", ["Paris", ":", "Day"]),
        ("(wow)?!", ["(", "wow", ")", "?", "!"]),
        ("x - y", ["x", "-", "y"]),
        # emoji are tokens of their own, even when glued to words or each other
        ("coffee time😀", ["coffee", "time", "😀"]),
        ("wow😀🏀!", ["wow", "😀", "🏀", "!"]),
        # inner apostrophes (straight and curly) and hyphens keep a word together
        ("I'm sure we can’t", ["I'm", "sure", "we", "can’t"]),
        ("New York's state-of-the-art rock-n-roll", ["New", "York's", "state-of-the-art", "rock-n-roll"]),
        # but leading / trailing / doubled ones do not
        ("'quoted' -dash- a--b", ["'", "quoted", "'", "-", "dash", "-", "a", "-", "-", "b"]),
        # non-ASCII letters are word characters
        ("café in Zürich", ["café", "in", "Zürich"]),
        # whitespace of any kind only separates
        ("  tabs\tand\nnewlines  ", ["tabs", "and", "newlines"]),
        ("", []),
        ("   ", []),
        # invisible format characters standing alone are no words either (issue 16)
        ("\u200b \ufeff\u2060 \u180e", []),
        ("a\u200b b", ["a", "b"]),
        # but a zero-width joiner inside an emoji sequence leaves the emoji
        ("\U0001F468\u200d\U0001F469", ["\U0001F468", "\U0001F469"]),
    ],
)
def test_tokenize_tweet(text, tokens):
    assert tokenize_tweet(text) == tokens


def test_tokens_cover_all_non_space_characters():
    text = "RT @maria_k: George Zimmerman spotted in Sanford today 😀 #news http://t.co/x1"
    tokens = tokenize_tweet(text)
    assert "".join(tokens) == "".join(text.split())
    assert all(token and not any(ch.isspace() for ch in token) for token in tokens)
