"""Splitting a raw tweet into words the way the Twitter MNER files are tokenized."""
import re
import unicodedata

# URLs, @users, #tags, ellipses and common emoticons stay whole (the datasets keep them as one
# token); words keep inner apostrophes and hyphens; every other non-space character (punctuation,
# emoji) stands alone.
_TOKEN = re.compile(
    r"https?://\S+|www\.\S+"
    r"|[@#]\w+"
    r"|\.{2,}|…"
    r"|[:;=][-']?[()DPp/\\|](?=\s|$)"
    r"|\w+(?:['’\-]\w+)*"
    r"|[^\w\s]",
)


def tokenize_tweet(text: str) -> list[str]:
    """`"RT @user: Flying to Paris!"` -> `["RT", "@user", ":", "Flying", "to", "Paris", "!"]`.

    Invisible format characters standing alone (zero-width space, word joiner, byte order mark:
    Unicode category Cf) are no tokens, as whitespace is none: a sentence of them has no words."""
    return [token for token in _TOKEN.findall(text) if not _invisible(token)]


def _invisible(token: str) -> bool:
    return all(unicodedata.category(character) == "Cf" for character in token)
