"""Word tokenizer: lower-case, then split into words and single punctuation marks.

`\\w` in Python's `re` is Unicode-aware, so Hangul, kana, CJK, Cyrillic or accented
words stay whole ("한국어", "café") instead of being cut at every non-ASCII letter.
"""

from __future__ import annotations

import re

# A word (letters, digits, underscore in any script) or any one other non-space character.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Split `text` into lower-cased word and punctuation tokens.

    Example:
        >>> tokenize("The movie was GREAT!")
        ['the', 'movie', 'was', 'great', '!']
        >>> tokenize("이 영화 정말 재미있어요.")
        ['이', '영화', '정말', '재미있어요', '.']
    """
    return _TOKEN_RE.findall(text.lower())
