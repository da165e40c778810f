"""Search: the caller's messages and session titles, best match first, page by page.

Rules: a search only ever reads the caller's rows; a session given as a filter must be the
caller's (else 404, as everywhere); a query too long or with nothing to search for is a 422. A
page continues from an opaque cursor carrying the last hit's (rank, id): ranks are not ids, so
the id alone, as other lists use it, could not say where the next page starts. A first page
ranks at most SEARCH_RANKED_MATCHES messages, the newest matches; when that left some out, the
cursor also carries the oldest message ranked (and on SQLite its place in the index), so later
pages rank the same set (and what was written since), never skipping or repeating a hit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from chat_store import search_index, search_query
from chat_store.crud import search as search_crud
from chat_store.crud.search import (
    MARK_END,
    MARK_START,
    RankedFrom,
    SearchFilters,
    SearchHit,
    SearchRequest,
)
from chat_store.errors import ValidationFailed
from chat_store.schemas.search import (
    SearchMessage,
    SearchPage,
    SearchParams,
    SearchResult,
    SearchSession,
)
from chat_store.services import chat_sessions as chat_session_service
from chat_store.services.context import RequestContext


async def search(ctx: RequestContext, params: SearchParams) -> SearchPage:
    db, principal = ctx.db, ctx.principal
    try:
        query = search_query.parse(params.q)
    except search_query.SearchQueryError as exc:
        raise ValidationFailed(str(exc), ["query", "q"]) from None
    if params.session_id is not None:
        await chat_session_service.get_owned(ctx, params.session_id)
    await _refuse_excluding_alone(ctx, query)
    filters = SearchFilters(
        session_id=params.session_id,
        role=params.role,
        repo=params.repo,
        favorite=params.favorite,
        status=params.status,
        after=_start_in_utc(params.after),
        before=_start_in_utc(params.before),
    )
    websearch = query.websearch()
    fingerprint = _fingerprint(websearch, filters)
    cursor = _decode_cursor(params.cursor, fingerprint) if params.cursor else None
    request = SearchRequest(
        user_id=principal.user_id,
        websearch=websearch,
        fts5=query.fts5(),
        filters=filters,
        limit=params.limit,
        cursor=cursor.after if cursor else None,
        ranked_matches=ctx.settings.search_ranked_matches,
        oldest_ranked=cursor.oldest_ranked if cursor else None,
    )
    found = await search_crud.search(db, request)
    hits, has_more = found.hits, found.has_more
    if not hits and request.cursor is None and not await search_crud.query_has_words(db, websearch):
        raise ValidationFailed(
            "the query has only stop words of the search language, nothing to search for",
            ["query", "q"],
        )
    last = hits[-1] if hits else None
    # Postgres marks every word of the query wherever it stands, a phrase's words apart too:
    # with words as written (`simple`), only the runs that match a term stay highlighted. A
    # stemming language's marks are left as the engine gives them.
    language = search_index.effective_language(
        ctx.db.get_bind().dialect.name, ctx.settings.search_language
    )
    terms = query.included_words() if language == "simple" else None
    return SearchPage(
        data=[_result(hit, terms) for hit in hits],
        has_more=has_more,
        next_cursor=(
            _encode_cursor(_Cursor((last.rank, last.hit_id), found.oldest_ranked), fingerprint)
            if has_more and last
            else None
        ),
    )


async def _refuse_excluding_alone(ctx: RequestContext, query: search_query.SearchQuery) -> None:
    """An alternative with -excluded terms whose words are all stop words of the search
    language (`the -flaky`) is -excluded terms alone once Postgres drops them: it would match
    almost every message, as the parser refuses `-flaky`. Asked only of those alternatives."""
    excluding = [alt for alt in query.alternatives if alt.excluded]
    if not excluding:
        return
    included = [
        search_query.SearchQuery((search_query.Alternative(alt.included),)).websearch()
        for alt in excluding
    ]
    if not all(await search_crud.queries_have_words(ctx.db, included)):
        raise ValidationFailed(
            "every alternative needs a word to search for: beside -excluded terms, this one "
            "has only stop words of the search language, and would match almost everything",
            ["query", "q"],
        )


def _start_in_utc(value: datetime | date | None) -> datetime | None:
    """A time with its offset as given; a date: the start of that day in UTC."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.combine(value, time(), tzinfo=UTC)


def _result(hit: SearchHit, terms: list[tuple[str, ...]] | None) -> SearchResult:
    snippet, highlights = parse_marks(hit.snippet, terms)
    message = None
    if hit.message_id is not None:
        assert hit.message_seq is not None and hit.message_created_at is not None
        message = SearchMessage(
            id=hit.message_id,
            seq=hit.message_seq,
            role=hit.message_role,
            created_at=hit.message_created_at,
        )
    return SearchResult(
        session=SearchSession(id=hit.session_id, title=hit.session_title),
        message=message,
        snippet=snippet,
        highlights=highlights,
        rank=hit.rank,
    )


def parse_marks(
    marked: str, terms: list[tuple[str, ...]] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The excerpt without its match marks, and [start, end) of each match in it (code
    points); matches with no letter or digit between them are one. With `terms` (each the
    words of an included term, lowercase), only marked words that make up a whole term are
    kept: a phrase's words marked apart, away from each other, are not a match."""
    text: list[str] = []
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for char in marked:
        if char == MARK_START:
            start = len(text)
        elif char == MARK_END:
            if start is not None and len(text) > start:
                spans.append((start, len(text)))
            start = None
        else:
            text.append(char)
    plain = "".join(text)
    if terms is not None:
        spans = _matching(plain, _words_in(plain, spans), terms)
    # Matches with no letter or digit between them are one highlight: `test_billing` and
    # `fixed clock` are one match of a phrase, not two (FTS5 marks a phrase as one match;
    # ts_headline marks each of its words).
    merged: list[tuple[int, int]] = []
    for span in spans:
        if merged and _no_word_between(plain, merged[-1][1], span[0]):
            merged[-1] = (merged[-1][0], span[1])
        else:
            merged.append(span)
    return plain, merged


def _no_word_between(plain: str, start: int, end: int) -> bool:
    """Only spaces and punctuation in plain[start:end]."""
    return search_query.WORD.search(plain, start, end) is None


def _words_in(plain: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each marked span cut into its words (a span may hold a phrase): runs of letters and
    digits, as the engines' tokenizers cut them (any other character parts words)."""
    return [
        found.span()
        for start, end in spans
        for found in search_query.WORD.finditer(plain, start, end)
    ]


def _matching(
    plain: str, words: list[tuple[int, int]], terms: list[tuple[str, ...]]
) -> list[tuple[int, int]]:
    """The marked words that, one after another (no letter or digit between), spell a whole
    term."""
    said = [plain[start:end].lower() for start, end in words]
    kept = [False] * len(words)
    for first in range(len(words)):
        for term in terms:
            last = first + len(term) - 1
            if last >= len(words) or tuple(said[first : last + 1]) != term:
                continue
            if all(
                _no_word_between(plain, words[i][1], words[i + 1][0]) for i in range(first, last)
            ):
                kept[first : last + 1] = [True] * len(term)
    return [word for word, keep in zip(words, kept, strict=True) if keep]


def _fingerprint(websearch: str, filters: SearchFilters) -> str:
    """Ties a cursor to its search: a cursor of another query or other filters would start the
    page at an arbitrary rank."""
    described = json.dumps([websearch, repr(filters)], ensure_ascii=False)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Cursor:
    after: tuple[float, uuid.UUID]  # the last hit's (rank, id)
    oldest_ranked: RankedFrom | None


def _encode_cursor(cursor: _Cursor, fingerprint: str) -> str:
    # repr() of a float reads back as the same float: the next page starts exactly below it.
    rank, hit_id = cursor.after
    fields: list[str | int] = [repr(rank), str(hit_id), fingerprint]
    if cursor.oldest_ranked is not None:
        fields += [
            cursor.oldest_ranked.created_at.isoformat(),
            str(cursor.oldest_ranked.message_id),
        ]
        if cursor.oldest_ranked.fts_rowid is not None:
            fields.append(cursor.oldest_ranked.fts_rowid)
    raw = json.dumps(fields, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> _Cursor:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        rank, hit_id, of_search, *ranked_from = json.loads(raw)
        oldest = None
        if ranked_from:
            at, message_id, *place = ranked_from
            fts_rowid = None
            if place:
                [fts_rowid] = place
                # A row's place is a 64-bit integer in the index (SQLite's rowid).
                if type(fts_rowid) is not int or not 0 <= fts_rowid < 1 << 63:
                    raise ValueError("not a row's place")
            created_at = datetime.fromisoformat(at)
            if created_at.tzinfo is None:
                raise ValueError("a time without its offset")
            oldest = RankedFrom(created_at.astimezone(UTC), uuid.UUID(message_id), fts_rowid)
        score = float(rank)
        if not math.isfinite(score):
            raise ValueError("not a rank")
        decoded = _Cursor((score, uuid.UUID(hit_id)), oldest)
    # AttributeError: uuid.UUID of a number.
    except (
        ValueError,
        TypeError,
        AttributeError,
        OverflowError,
        binascii.Error,
        UnicodeDecodeError,
    ):
        raise ValidationFailed("not a search cursor", ["query", "cursor"]) from None
    if of_search != fingerprint:
        raise ValidationFailed(
            "the cursor belongs to another search: give the same query and filters",
            ["query", "cursor"],
        )
    return decoded
