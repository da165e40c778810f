"""The search box syntax: what a query means, and how it is written for each engine."""

from __future__ import annotations

import pytest

from chat_store.search_query import (
    MAX_QUERY_CHARS,
    MAX_TERMS,
    Alternative,
    SearchQueryError,
    Term,
    parse,
)
from chat_store.services.search import parse_marks


def test_words_must_all_be_there() -> None:
    query = parse("fixture  clock")
    assert query.alternatives == (Alternative((Term("fixture"), Term("clock"))),)
    assert query.websearch() == '"fixture" "clock"'
    assert query.fts5() == '("fixture" AND "clock")'


def test_quoted_phrase_is_one_term() -> None:
    query = parse('"fixed clock" billing')
    assert query.alternatives == (Alternative((Term("fixed clock"), Term("billing"))),)
    assert query.websearch() == '"fixed clock" "billing"'


def test_excluded_words_and_phrases() -> None:
    query = parse('clock -flaky -"fixed clock"')
    alternative = query.alternatives[0]
    assert alternative.included == (Term("clock"),)
    assert alternative.excluded == (Term("flaky", True), Term("fixed clock", True))
    assert query.websearch() == '"clock" -"flaky" -"fixed clock"'
    assert query.fts5() == '((("clock") NOT "flaky") NOT "fixed clock")'


def test_or_separates_alternatives_in_any_case() -> None:
    query = parse("KeyError OR TypeError clock or flaky")
    assert [alt.terms for alt in query.alternatives] == [
        (Term("KeyError"),),
        (Term("TypeError"), Term("clock")),
        (Term("flaky"),),
    ]
    assert query.websearch() == '"KeyError" or "TypeError" "clock" or "flaky"'
    assert query.fts5() == '("KeyError") OR ("TypeError" AND "clock") OR ("flaky")'


def test_leading_trailing_and_doubled_or_are_ignored() -> None:
    assert parse("or clock or or flaky or").words == ("clock", "flaky")


def test_quoted_or_and_hyphenated_words_are_text() -> None:
    assert parse('"this or that"').alternatives == (Alternative((Term("this or that"),)),)
    assert parse("foo-bar").alternatives == (Alternative((Term("foo-bar"),)),)


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("test_billing", "test billing"),
        ("src/app/main.py", "src app main py"),
        ("os.path.join()", "os path join"),
        ("KeyError:", "KeyError"),
        ("https://github.com/acme/api", "https github com acme api"),
        ("v1.2.3", "v1 2 3"),
    ],
)
def test_code_is_split_at_punctuation_into_a_phrase(typed: str, words: str) -> None:
    query = parse(typed)
    assert query.words == (words,)
    assert query.websearch() == f'"{words}"'
    assert query.fts5() == f'("{words}")'


def test_a_flag_is_searched_for_not_excluded() -> None:
    """`git commit --amend` is about `--amend`: only a dash right before a letter, a digit or a
    quote excludes."""
    query = parse("git commit --amend")
    assert query.alternatives[0].included == (Term("git"), Term("commit"), Term("--amend"))
    assert query.alternatives[0].excluded == ()
    assert parse('"--verbose"').alternatives[0].included == (Term("--verbose"),)
    assert parse("clock -flaky -2").alternatives[0].excluded == (
        Term("flaky", True),
        Term("2", True),
    )


def test_unclosed_quote_runs_to_the_end() -> None:
    assert parse('clock "fixed cl').words == ("clock", "fixed cl")


def test_syntax_of_the_engines_is_only_text() -> None:
    # FTS5 and tsquery operators typed in the box are words (or nothing), never operators.
    query = parse('NEAR(a b) body:x a* ^b !c (d | e) & f <-> g "h""i')
    assert query.fts5() == (
        '("NEAR a" AND "b" AND "body x" AND "a" AND "b" AND "c" AND "d" AND "e" AND "f" '
        'AND "g" AND "h" AND "i")'
    )


@pytest.mark.parametrize(
    "typed",
    ["", "   ", "+++", "-clock", '-"fixed clock"', "or", "⏰ ->", "clock or -flaky"],
)
def test_nothing_to_search_for_is_refused(typed: str) -> None:
    with pytest.raises(SearchQueryError):
        parse(typed)


def test_too_long_or_too_many_terms_is_refused() -> None:
    parse("a" * MAX_QUERY_CHARS)
    with pytest.raises(SearchQueryError, match="characters"):
        parse("a" * (MAX_QUERY_CHARS + 1))
    parse(" ".join(["w"] * MAX_TERMS))
    with pytest.raises(SearchQueryError, match="terms"):
        parse(" ".join(["w"] * (MAX_TERMS + 1)))


def test_non_latin_words_are_words() -> None:
    assert parse("привет 日本語 café").words == ("привет", "日本語", "café")


def test_marks_become_highlights_in_code_points() -> None:
    text, spans = parse_marks(
        "…the \ue000fixed\ue001 \ue000clock\ue001 ⏰ in \ue000test\ue001_\ue000x\ue001"
    )
    assert text == "…the fixed clock ⏰ in test_x"
    assert spans == [(5, 16), (22, 28)]
    assert [text[start:end] for start, end in spans] == ["fixed clock", "test_x"]


def test_marks_without_a_match_or_unclosed_are_dropped() -> None:
    assert parse_marks("a\ue000\ue001b \ue000c") == ("ab c", [])


def test_the_index_splits_at_the_same_characters_as_queries() -> None:
    """The migration's SQL pattern (Postgres) turns into spaces exactly the characters that the
    parser turns into spaces in query terms."""
    import importlib.util
    import re

    from chat_store import migrate
    from chat_store.search_query import PUNCTUATION

    path = migrate.MIGRATIONS_DIR / "versions" / "2026-12-05_search.py"
    spec = importlib.util.spec_from_file_location("search_migration", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    pattern = re.compile(migration._PUNCTUATION.strip("'"))
    split = {chr(code) for code in range(128) if pattern.fullmatch(chr(code))}
    assert split == set(PUNCTUATION)
