"""SEARCH_LANGUAGE: the index rebuilt with `english` (down to 0001 and up again, as
docs/operations.md says) stems words; on Postgres a query of stop words only is a 422."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx

from chat_store import search_index
from tests.api.test_cli_portability import chat_store
from tests.assertions import assert_validation_error
from tests.backends import provision
from tests.conftest import app_on
from tests.factories import API
from tests.support.logs import startup_warnings


async def _migrate_in_a_process(url: str, revision: str, language: str) -> None:
    # The migration reads SEARCH_LANGUAGE from the settings, cached once per process.
    code = "import sys; from chat_store import migrate; migrate.upgrade(sys.argv[1], sys.argv[2])"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        url,
        revision,
        env={**os.environ, "SEARCH_LANGUAGE": language},
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]


async def test_english_stems_and_refuses_stop_words_only() -> None:
    async with provision("lang") as backend, app_on(backend) as started:
        client, factory = started.client, started.factory
        account = await factory.account()
        session = await factory.chat_session(account, title="t")
        message = await factory.message(account, session["id"], content="She fixed the tests")

        async def search(q: str) -> list[str]:
            response = await client.get(f"{API}/search", params={"q": q}, headers=account.headers)
            assert response.status_code == 200, response.text
            return [hit["message"]["id"] for hit in response.json()["data"] if hit["message"]]

        assert await search("fixing") == []  # `simple`: words as written
        await asyncio.to_thread(_downgrade, backend.database_url)
        await _migrate_in_a_process(backend.database_url, "head", "english")

        assert await search("fixing") == [message["id"]]
        assert await search("test") == [message["id"]]
        response = await client.get(f"{API}/search", params={"q": "the"}, headers=account.headers)
        if backend.name == "postgres":
            body = assert_validation_error(response, "query", "q")
            assert "stop words" in body["detail"]
        else:  # FTS5's Porter stemmer drops no words
            assert response.status_code == 200, response.text


def _downgrade(url: str) -> None:
    from chat_store import migrate

    migrate.downgrade(url, "0001")


async def test_english_refuses_stop_words_beside_excluded_terms() -> None:
    """`the -flaky` is `-flaky` once the stop word is dropped: it matched every message without
    the word, where `-flaky` alone is refused."""
    async with provision("lang_excluded") as backend, app_on(backend) as started:
        client, factory = started.client, started.factory
        account = await factory.account()
        session = await factory.chat_session(account, title="groceries")
        message = await factory.message(account, session["id"], content="buy milk and eggs")
        await asyncio.to_thread(_downgrade, backend.database_url)
        await _migrate_in_a_process(backend.database_url, "head", "english")

        async def search(q: str) -> httpx.Response:
            return await client.get(f"{API}/search", params={"q": q}, headers=account.headers)

        assert_validation_error(await search("-flaky"), "query", "q")
        for query in ("the -flaky", "milk or the -flaky", '"the a" -flaky'):
            response = await search(query)
            if backend.name == "postgres":
                body = assert_validation_error(response, "query", "q")
                assert "stop words" in body["detail"], body
            else:  # FTS5 drops no words: `the` is searched (and is in no message here)
                assert response.status_code == 200, response.text
        # An alternative that keeps a word beside its excluded terms is searched as before.
        found = await search("milk -flaky")
        assert found.status_code == 200, found.text
        assert [hit["message"]["id"] for hit in found.json()["data"] if hit["message"]] == [
            message["id"]
        ]


async def test_reindex_builds_the_index_again_in_the_new_language(tmp_path: Path) -> None:
    """After `chat-store reindex`, every stored text (titles too) and every new one is searched
    in SEARCH_LANGUAGE; built again in `simple` (in batches of one row), words are as written
    again. Open answers stay out of the index."""
    async with provision("reindex") as backend, app_on(backend) as started:
        client, factory = started.client, started.factory
        account = await factory.account()
        other = await factory.account()
        session = await factory.chat_session(account, title="Fixing flaky builds")
        fixed = await factory.message(account, session["id"], content="She fixed the tests")
        await factory.message(account, session["id"], role="assistant", status="in_progress")
        foreign = await factory.chat_session(other, title="t")
        await factory.message(other, foreign["id"], content="He fixed it")

        async def search(q: str) -> list[str]:
            response = await client.get(f"{API}/search", params={"q": q}, headers=account.headers)
            assert response.status_code == 200, response.text
            return [
                (hit["message"] or {}).get("id") or hit["session"]["title"]
                for hit in response.json()["data"]
            ]

        assert await search("fixing") == ["Fixing flaky builds"]  # `simple`: as written

        result = await chat_store(backend, tmp_path, "reindex", SEARCH_LANGUAGE="english")
        assert result.returncode == 0, result.stderr
        assert "built again in english" in result.stdout + result.stderr
        async with started.state.engine.connect() as connection:
            assert await connection.run_sync(search_index.built_language) == "english"

        assert sorted(map(str, await search("fixing"))) == sorted(
            [fixed["id"], "Fixing flaky builds"]
        )
        assert await search("build") == ["Fixing flaky builds"]
        later = await factory.message(account, session["id"], content="fixes everywhere")
        assert later["id"] in await search("fix")
        # The other user's message is indexed again under its owner, not this one.
        assert len(await search("fixed")) == 3

        async with started.state.engine.connect() as connection:
            rebuilt = await connection.run_sync(search_index.rebuild, "simple", 1)
            assert await connection.run_sync(search_index.built_language) == "simple"
        assert rebuilt.titles == 2
        assert await search("fixing") == ["Fixing flaky builds"]
        assert await search("fix") == []


async def test_reindex_refuses_a_language_postgres_does_not_know(tmp_path: Path) -> None:
    async with provision("reindex_unknown") as backend, app_on(backend) as started:
        account = await started.factory.account()
        session = await started.factory.chat_session(account, title="t")
        await started.factory.message(account, session["id"], content="She fixed the tests")

        result = await chat_store(backend, tmp_path, "reindex", SEARCH_LANGUAGE="klingon")

        async with started.state.engine.connect() as connection:
            built = await connection.run_sync(search_index.built_language)
    if backend.name == "postgres":
        assert result.returncode == 1, result.stdout
        assert "no text search configuration 'klingon'" in result.stderr
        assert "Traceback" not in result.stderr
        assert built == "simple"  # nothing changed
    else:  # SQLite searches every language but English as `simple`
        assert result.returncode == 0, result.stderr
        assert built == "simple"


async def test_a_language_other_than_the_index_is_said_at_start() -> None:
    async with provision("reindex_warn") as backend:
        with startup_warnings() as warnings:
            async with app_on(backend, search_language="english"):
                pass
        said = [warning for warning in warnings if "SEARCH_LANGUAGE" in warning]
        assert len(said) == 1, warnings
        assert "built in simple" in said[0] and "chat-store reindex" in said[0]
        with startup_warnings() as warnings:
            async with app_on(backend, search_language="simple"):
                pass
        assert not [warning for warning in warnings if "SEARCH_LANGUAGE" in warning]
