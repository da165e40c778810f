"""The search box syntax, parsed once and written out for each database's full-text engine.

What a user may type, as in a web search box: words, "quoted phrases", `-excluded` words or
phrases, and `or` between alternatives. Everything else is text: no operator of Postgres'
tsquery or SQLite's FTS5 can be reached from it, so no input is a syntax error there.

Code is searched as it is written. Punctuation inside a term (`test_billing`, `src/app/main.py`,
`os.path.join`) splits it into words that must follow each other, a phrase, and the stored text
is split the same way: `main.py`, `app/main.py` and the whole path all find `src/app/main.py`.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

MAX_QUERY_CHARS = 256
MAX_TERMS = 16

# ASCII punctuation becomes a space in indexed text and in query terms alike (one character for
# one, so offsets in the text do not move). Postgres' parser would otherwise keep
# `src/app/main.py` as one "file" token that `main.py` cannot find; SQLite's unicode61
# tokenizer splits at punctuation by itself, so both engines see the same words.
PUNCTUATION = string.punctuation
_TO_SPACES = str.maketrans(PUNCTUATION, " " * len(PUNCTUATION))


WORD = re.compile(r"[^\W_]+")  # letters and digits, as the engines cut words


class SearchQueryError(ValueError):
    """The query cannot be searched: why, in words for the person who typed it."""


@dataclass(frozen=True)
class Term:
    text: str  # as typed, punctuation and all
    excluded: bool = False

    @property
    def words(self) -> str:
        """The term as the index sees it: punctuation as spaces, one run of spaces each."""
        return " ".join(self.text.translate(_TO_SPACES).split())


@dataclass(frozen=True)
class Alternative:
    """Terms that must all hold: the included ones present, the excluded ones absent."""

    terms: tuple[Term, ...]

    @property
    def included(self) -> tuple[Term, ...]:
        return tuple(term for term in self.terms if not term.excluded)

    @property
    def excluded(self) -> tuple[Term, ...]:
        return tuple(term for term in self.terms if term.excluded)


@dataclass(frozen=True)
class SearchQuery:
    """Alternatives joined by `or`; a message matches when one of them holds."""

    alternatives: tuple[Alternative, ...] = field(default_factory=tuple)

    def websearch(self) -> str:
        """For Postgres' websearch_to_tsquery: every term quoted (a phrase of its words), so
        the only operators left are the ones this parser put there."""
        return " or ".join(
            " ".join(("-" if term.excluded else "") + f'"{term.words}"' for term in alt.terms)
            for alt in self.alternatives
        )

    def fts5(self) -> str:
        """For SQLite's FTS5 MATCH: each term a string (a phrase of its tokens), joined by
        FTS5's own AND, NOT and OR, with parentheses rather than its precedence rules."""
        groups = []
        for alt in self.alternatives:
            group = "(" + " AND ".join(_fts5_string(term) for term in alt.included) + ")"
            for term in alt.excluded:
                group = f"({group} NOT {_fts5_string(term)})"
            groups.append(group)
        return " OR ".join(groups)

    def included_words(self) -> list[tuple[str, ...]]:
        """The words of each term a match must hold, lowercase (for the highlights)."""
        return [
            tuple(WORD.findall(term.words.lower()))
            for alt in self.alternatives
            for term in alt.included
        ]

    @property
    def words(self) -> tuple[str, ...]:
        """Every term, included or not, as the index sees it (for tests and logs)."""
        return tuple(term.words for alt in self.alternatives for term in alt.terms)


def _fts5_string(term: Term) -> str:
    # Quotes cannot survive parsing, but an FTS5 string escapes them by doubling all the same.
    return '"' + term.words.replace('"', '""') + '"'


def _searchable(text: str) -> bool:
    # A term without a letter or digit gives no word to either engine ("+++", "->", "⏰").
    return any(char.isalnum() for char in text)


def _tokens(text: str) -> list[tuple[str, bool, bool]]:
    """(text, quoted, excluded) of each word or quoted phrase, in order. An unclosed quote runs
    to the end, as in a web search box."""
    tokens: list[tuple[str, bool, bool]] = []
    position, end = 0, len(text)
    while position < end:
        if text[position].isspace():
            position += 1
            continue
        excluded = False
        # `-word` or `-"phrase"` excludes; `--amend`, `-> x` or a lone `-` is text (a flag is
        # searched for, not left out).
        if text[position] == "-" and position + 1 < end:
            following = text[position + 1]
            if following.isalnum() or following == '"':
                excluded = True
                position += 1
        if text[position] == '"':
            closing = text.find('"', position + 1)
            closing = end if closing == -1 else closing
            tokens.append((text[position + 1 : closing], True, excluded))
            position = closing + 1
            continue
        start = position
        while position < end and not text[position].isspace() and text[position] != '"':
            position += 1
        tokens.append((text[start:position], False, excluded))
    return tokens


def parse(text: str) -> SearchQuery:
    """The query in `text`, or SearchQueryError when it is too long or has nothing to find."""
    if len(text) > MAX_QUERY_CHARS:
        raise SearchQueryError(
            f"the query is {len(text)} characters long; at most {MAX_QUERY_CHARS} are searched"
        )
    alternatives: list[list[Term]] = [[]]
    for token, quoted, excluded in _tokens(text):
        if not quoted and not excluded and token.lower() == "or":
            if alternatives[-1]:  # a leading or doubled `or` joins nothing: ignored
                alternatives.append([])
            continue
        if _searchable(token):
            alternatives[-1].append(Term(token, excluded))
    if not alternatives[-1]:  # a trailing `or`
        alternatives.pop()
    if not alternatives:
        raise SearchQueryError("the query has no word to search for (letters or digits)")
    if sum(len(alt) for alt in alternatives) > MAX_TERMS:
        raise SearchQueryError(f"the query has more than {MAX_TERMS} terms")
    parsed = SearchQuery(tuple(Alternative(tuple(alt)) for alt in alternatives))
    for alt in parsed.alternatives:
        if not alt.included:
            raise SearchQueryError(
                "every alternative needs a word to search for: "
                "a query of only -excluded terms would match almost everything"
            )
    return parsed
