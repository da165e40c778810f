"""The terminal client in a real pseudo-terminal (pexpect), against real `chat-store serve`
processes and the test model provider: what a person at a terminal types and sees."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pexpect
import pytest

from chat_store.client import AsyncChatStoreClient, ChatStoreClient
from chat_store.client.models import ChatTurn
from chat_store.terminal.config import Login
from chat_store.terminal.conversation import print_stream
from tests.backends import Backend
from tests.e2e.conftest import ServerProcess, llm_env, running_server
from tests.e2e.test_client_flows import PASSWORD, new_account
from tests.support.llm_server import DEFAULT_TEXT, LlmServer, default_text

pytestmark = pytest.mark.e2e

CLI = str(Path(sys.executable).with_name("chat-store"))
SLOW_TEXT = default_text(120)  # about 4.8 s at the delay below


@pytest.fixture(scope="module")
async def chat_server(e2e_backend: Backend, llm: LlmServer) -> AsyncIterator[ServerProcess]:
    """The module's server, one run per answer: it sweeps the same database as the servers of
    the resume test, and must fail a killed process's answer (as they do), not take it over
    and finish it before `resume` is run."""
    async with running_server(e2e_backend, **llm_env(llm, GENERATION_MAX_ATTEMPTS="1")) as started:
        yield started


@pytest.fixture
def terminal_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a person's shell: their own config folder, no key, no colors."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"CHAT_STORE_API_KEY", "CHAT_STORE_URL"}
    }
    env.update(CHAT_STORE_CONFIG_DIR=str(tmp_path / "config"), NO_COLOR="1", TERM="dumb")
    return env


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        CLI, list(args), env=env, encoding="utf-8", timeout=30, dimensions=(50, 220)
    )


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """The command with stdin and stdout as pipes (a script, `| less`)."""
    return subprocess.run(
        [CLI, *args], input=stdin, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def finished(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, child.signalstatus
    return int(child.exitstatus)


def press_ctrl_c(child: pexpect.spawn, *, until: str, attempts: int = 3) -> None:
    """Ctrl-C during an answer, pressed again only if the answer went on streaming for 1.5 s
    after it (a Ctrl-C being acted on stops the stream at once; a second one would interrupt
    the cancel itself). Python drops a KeyboardInterrupt that its signal handler raises while a
    finalizer runs ("Exception ignored in ..."), and a person at the terminal presses again."""
    for _ in range(attempts):
        child.sendintr()
        if child.expect([until, pexpect.TIMEOUT], timeout=1.5) == 0:
            return
        if len(re.findall(r"\bw\d+", child.before)) < 10:  # stopped: the cancel is under way
            child.expect(until)
            return
    raise AssertionError(f"{attempts} Ctrl-C did not bring {until!r}; the screen: {child.before!r}")


def log_in(env: dict[str, str], server: ServerProcess, email: str) -> None:
    child = spawn(env, "login", "--url", server.base_url, "--email", email)
    child.expect("Password:")
    child.sendline(PASSWORD)
    child.expect("Logged in")
    assert finished(child) == 0


async def account(server: ServerProcess) -> tuple[AsyncChatStoreClient, str]:
    return await new_account(server)


async def test_login_keeps_a_private_file_and_never_shows_the_password(
    chat_server: ServerProcess, terminal_env: dict[str, str]
) -> None:
    client, email = await account(chat_server)
    await client.aclose()

    child = spawn(terminal_env, "login", "--url", chat_server.base_url)
    child.expect("Email:")
    child.sendline(email)
    child.expect("Password:")
    child.sendline(PASSWORD)
    child.expect(f"Logged in to {chat_server.base_url} as {email}")
    transcript = child.before + child.after
    assert finished(child) == 0
    assert PASSWORD not in transcript  # typed without echo

    saved = Path(terminal_env["CHAT_STORE_CONFIG_DIR"]) / "login.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert PASSWORD not in saved.read_text()
    assert json.loads(saved.read_text())["url"] == chat_server.base_url

    whoami = run(terminal_env, "whoami", "--json")
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["user"]["email"] == email

    # A wrong password: one line, exit 3, nothing kept.
    saved.unlink()
    child = spawn(terminal_env, "login", "--url", chat_server.base_url, "--email", email)
    child.expect("Password:")
    child.sendline("not the password")
    child.expect("error: ")
    assert finished(child) == 3
    assert not saved.exists()
    assert run(terminal_env, "sessions").returncode == 3  # not logged in


async def test_an_expired_login_is_refreshed_and_a_dead_one_asks_to_log_in_again(
    chat_server: ServerProcess, terminal_env: dict[str, str]
) -> None:
    client, email = await account(chat_server)
    await client.aclose()
    log_in(terminal_env, chat_server, email)
    saved = Path(terminal_env["CHAT_STORE_CONFIG_DIR"]) / "login.json"
    login = json.loads(saved.read_text())

    # An access token the service no longer takes: the client refreshes and saves the new pair.
    saved.write_text(json.dumps({**login, "access_token": "expired." + login["access_token"]}))
    listed = run(terminal_env, "sessions", "--json")
    assert listed.returncode == 0, listed.stderr
    refreshed = json.loads(saved.read_text())
    assert refreshed["refresh_token"] != login["refresh_token"]
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600

    # The login ended on the server (logout elsewhere): a clear one-liner and exit 3.
    async with chat_server.client() as other:
        await other.logout(refreshed["refresh_token"])
    saved.write_text(json.dumps({**refreshed, "access_token": "expired.x"}))
    dead = run(terminal_env, "sessions")
    assert dead.returncode == 3
    assert dead.stderr.count("\n") == 1 and "chat-store login" in dead.stderr
    assert "Traceback" not in dead.stderr


async def test_chat_picks_a_session_streams_a_turn_and_ctrl_c_cancels_the_answer(
    chat_server: ServerProcess, terminal_env: dict[str, str], llm: LlmServer
) -> None:
    client, email = await account(chat_server)
    async with client:
        await client.create_session(title="Older work")
        log_in(terminal_env, chat_server, email)

        child = spawn(terminal_env, "chat")
        child.expect("Older work")
        child.expect("Pick a session")
        child.sendline("0")  # a new one
        child.expect("you> ")
        child.sendline("Why does the test fail?")
        child.expect_exact(DEFAULT_TEXT.strip())
        child.expect("you> ")

        await llm.script("test", {"text": SLOW_TEXT, "delay": 0.04})
        child.sendline("Explain it slowly")
        child.expect_exact("w3")  # the answer is being written
        press_ctrl_c(child, until="cancelled: the text so far is kept")
        child.expect("you> ")  # the conversation goes on

        sessions = (await client.list_sessions(limit=1)).data
        chat_session = sessions[0]
        messages = (await client.list_messages(chat_session.id, order="desc", limit=1)).data
        cancelled = messages[0]
        assert cancelled.role == "assistant" and cancelled.status == "cancelled"
        assert 0 < len(cancelled.text) < len(SLOW_TEXT)
        assert SLOW_TEXT.startswith(cancelled.text)

        child.sendline("/help")
        child.expect("/switch N")
        child.sendline("/rename Clock bug")
        child.expect("renamed to 'Clock bug'")
        child.sendline("/exit")
        assert finished(child) == 0
        assert (await client.get_session(chat_session.id)).title == "Clock bug"


async def test_the_prompt_edits_the_line_and_keeps_the_pickers_list(
    chat_server: ServerProcess, terminal_env: dict[str, str]
) -> None:
    """Left arrow edits the line (readline) rather than sending an escape sequence; /switch N
    takes the numbers of the list the session was picked from; Ctrl-C at the picker is an
    interrupt (130)."""
    client, email = await account(chat_server)
    async with client:
        await client.create_session(title="Older work")
        newer = await client.create_session(title="Newer work")
        log_in(terminal_env, chat_server, email)

        child = spawn(terminal_env, "chat")
        child.expect("Pick a session")
        child.sendline("1")
        child.expect("you> ")
        child.send("helo\x1b[Dl\r")
        child.expect_exact(DEFAULT_TEXT.strip())
        child.expect("you> ")
        child.sendline("/switch 2")
        child.expect("Older work")
        child.sendline("/exit")
        assert finished(child) == 0

        stored = (await client.list_messages(newer.id)).data
        assert [message.role for message in stored] == ["user", "assistant"]
        assert stored[0].content == "hello"

        picking = spawn(terminal_env, "chat")
        picking.expect("Pick a session")
        picking.sendintr()
        assert finished(picking) == 130


async def test_input_that_is_not_utf8_is_refused_and_the_chat_goes_on(
    chat_server: ServerProcess, terminal_env: dict[str, str]
) -> None:
    """Read from a pipe (no readline to drop the stray byte): the line is refused in one line,
    nothing is sent, the next line is asked; `ask` refuses such a question (exit 2)."""
    client, email = await account(chat_server)
    async with client:
        chat_session = await client.create_session(title="Bytes")
        log_in(terminal_env, chat_server, email)

        chatted = subprocess.run(
            [CLI, "chat", str(chat_session.id)],
            input=b"Why does the test fail?\ncaf\xe9 au lait\nAnd now?\n/exit\n",
            env=terminal_env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        asked = subprocess.run(
            [CLI, "ask", "--session", str(chat_session.id)],
            input=b"caf\xe9",
            env=terminal_env,
            capture_output=True,
            timeout=60,
            check=False,
        )

        assert chatted.returncode == 0, chatted.stderr
        assert b"not UTF-8 text" in chatted.stderr
        assert b"Traceback" not in chatted.stderr
        assert asked.returncode == 2, asked.stderr
        assert b"not UTF-8 text" in asked.stderr
        stored = (await client.list_messages(chat_session.id)).data
        assert [message.content for message in stored if message.role == "user"] == [
            "Why does the test fail?",
            "And now?",
        ]


async def test_an_answer_that_calls_tools_says_so_and_show_lists_the_calls(
    chat_server: ServerProcess, terminal_env: dict[str, str], llm: LlmServer
) -> None:
    client, email = await account(chat_server)
    async with client:
        chat_session = await client.create_session(title="Tools")
        log_in(terminal_env, chat_server, email)
        call = {"id": "call_9", "name": "read_file", "arguments": '{"path": "src/app.py"}'}
        await llm.script("test", {"text": "", "tool_calls": [call]})

        asked = run(terminal_env, "ask", "--session", str(chat_session.id), "Read the app")

        assert asked.returncode == 0, asked.stderr
        assert asked.stdout == "\n"  # the answer's text: none
        assert "the model asked for tools" in asked.stderr
        assert '→ read_file({"path": "src/app.py"}) [call_9]' in asked.stderr
        answer = (await client.list_messages(chat_session.id, order="desc", limit=1)).data[0]
        await client.append_message(
            chat_session.id, role="tool", content="def app(): ...", tool_call_id="call_9"
        )
        shown = run(terminal_env, "show", str(chat_session.id))
        assert shown.returncode == 0, shown.stderr
        assert '→ read_file({"path": "src/app.py"}) [call_9]' in shown.stdout
        assert "## tool, result of call_9" in shown.stdout
        assert answer.tool_calls is not None


def interrupted_before_the_turn() -> Iterator[ChatTurn]:
    """A chat stream that Ctrl-C stopped before its `turn` event arrived."""
    raise KeyboardInterrupt
    yield  # a generator, as the client's chat() is


async def test_ctrl_c_before_the_turn_arrived_still_cancels_its_answer(
    chat_server: ServerProcess, llm: LlmServer
) -> None:
    client, _ = await account(chat_server)
    async with client:
        chat_session = await client.create_session()
        await llm.script("test", {"text": SLOW_TEXT, "delay": 0.04})
        # The turn reached the service (which goes on without its client); its id never
        # reached the terminal.
        turn = await anext(aiter(client.chat(chat_session.id, "Explain it slowly")))
        assert isinstance(turn, ChatTurn)
        sync_client = ChatStoreClient(chat_server.base_url, access_token=client.access_token)

        with sync_client:
            other = await asyncio.to_thread(
                print_stream,
                sync_client,  # type: ignore[arg-type]
                chat_session.id,
                interrupted_before_the_turn(),
                question="Another question",
            )
            answer = await asyncio.to_thread(
                print_stream,
                sync_client,  # type: ignore[arg-type]
                chat_session.id,
                interrupted_before_the_turn(),
                question="Explain it slowly",
            )

        # Only the answer to the question typed is cancelled.
        assert (other.message_id, other.status) == (None, "interrupted")
        assert (answer.message_id, answer.status) == (turn.assistant_message.id, "cancelled")
        stored = await client.get_message(chat_session.id, turn.assistant_message.id)
        assert stored.status == "cancelled" and len(stored.text) < len(SLOW_TEXT)


async def test_ask_in_a_pipe_prints_plain_text_and_json_for_scripts(
    chat_server: ServerProcess, terminal_env: dict[str, str]
) -> None:
    client, email = await account(chat_server)
    await client.aclose()
    log_in(terminal_env, chat_server, email)

    piped = run(terminal_env, "ask", stdin="Why does the test fail?\n")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == DEFAULT_TEXT + "\n"  # the answer alone: no colors, no frame

    again = run(terminal_env, "ask", "And now?", "--session", "last", "--json")
    assert again.returncode == 0, again.stderr
    turn = json.loads(again.stdout)
    assert turn["user_message"]["content"] == "And now?"
    assert turn["assistant_message"]["content"] == DEFAULT_TEXT
    assert turn["assistant_message"]["status"] == "complete"

    shown = json.loads(run(terminal_env, "show", "last", "--json").stdout)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"] * 2

    other = json.loads(run(terminal_env, "new", "--title", "Other", "--json").stdout)
    listed = json.loads(run(terminal_env, "sessions", "--json").stdout)
    assert listed[0]["id"] == other["id"] and len(listed) == 2
    prefix = listed[0]["id"].replace("-", "")[:13]
    assert (
        json.loads(run(terminal_env, "show", prefix, "--json").stdout)["session"]["id"]
        == (listed[0]["id"])
    )
    exported = run(terminal_env, "export", "last", "--format", "json")
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert document["format"] == "chat-store/1" and document["session"]["title"] == "Other"
    target = Path(terminal_env["CHAT_STORE_CONFIG_DIR"]).parent / "clock.md"
    to_file = run(terminal_env, "export", listed[1]["id"], "-o", str(target))
    assert to_file.returncode == 0, to_file.stderr
    assert DEFAULT_TEXT.strip() in target.read_text()

    missing = run(terminal_env, "show", "ffffffff")
    assert missing.returncode == 4 and missing.stderr.startswith("error: ")


async def test_follow_from_a_second_terminal_shows_the_same_text(
    chat_server: ServerProcess, terminal_env: dict[str, str], llm: LlmServer
) -> None:
    client, email = await account(chat_server)
    await client.aclose()
    log_in(terminal_env, chat_server, email)
    await llm.script("test", {"text": SLOW_TEXT, "delay": 0.02})

    first = spawn(terminal_env, "ask", "Explain it slowly")
    first.expect_exact("w2")
    asked = first.before + first.after
    second = spawn(terminal_env, "follow", "last")
    second.expect_exact(SLOW_TEXT.strip())
    assert finished(second) == 0
    assert finished(first) == 0
    asked += first.before
    assert asked.replace("\r\n", "\n") == SLOW_TEXT + "\n"  # the same text, once


async def test_resume_after_the_server_was_killed_mid_answer(
    e2e_backend: Backend, llm: LlmServer, terminal_env: dict[str, str]
) -> None:
    # One run per answer: the next process fails the dead one's answer (its text kept) rather
    # than taking it over, so what is left is for `resume` to finish.
    env = llm_env(
        llm,
        GENERATION_LEASE_SECONDS="1",
        GENERATION_SWEEP_SECONDS="0.3",
        GENERATION_MAX_ATTEMPTS="1",
    )
    await llm.script("test", {"text": SLOW_TEXT, "delay": 0.04})
    async with running_server(e2e_backend, **env) as doomed:
        client, _ = await account(doomed)
        async with client:
            key = (await client.create_api_key("terminal")).key
        script_env = {**terminal_env, "CHAT_STORE_API_KEY": key, "CHAT_STORE_URL": doomed.base_url}
        asking = spawn(script_env, "ask", "Explain it slowly")
        asking.expect_exact("w5")
        doomed.process.kill()
        doomed.wait()
        asking.kill(signal.SIGKILL)

    async with running_server(e2e_backend, **env) as survivor:
        async with survivor.client(api_key=key) as other:
            chat_session = (await other.list_sessions(limit=1)).data[0]
            await _until_failed(other, chat_session.id)
        script_env["CHAT_STORE_URL"] = survivor.base_url
        resumed = run(script_env, "resume")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout == SLOW_TEXT + "\n"  # the stored part, then the rest, once
        async with survivor.client(api_key=key) as other:
            answer = (await other.list_messages(chat_session.id, order="desc", limit=1)).data[0]
        assert answer.status == "complete" and answer.content == SLOW_TEXT


async def _until_failed(client: AsyncChatStoreClient, session_id: uuid.UUID) -> None:
    for _ in range(200):
        page = await client.list_messages(session_id, order="desc", limit=1)
        if page.data and page.data[0].status == "failed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the dead process's answer was not failed: {page.data}")


async def test_search_prints_a_table_with_matches_emphasized_and_json_for_scripts(
    server: ServerProcess, terminal_env: dict[str, str]
) -> None:
    client, email = await account(server)
    billing = await client.create_session(title="Billing flake")
    await client.append_message(billing.id, "user", "Why does test_billing fail on CI?")
    await client.append_message(
        billing.id, "assistant", "The fixture clock is frozen, and test_billing reads the date."
    )
    other = await client.create_session(title="Deploy notes")
    await client.append_message(other.id, "user", "test_billing is flaky again after the deploy")
    await client.aclose()
    log_in(terminal_env, server, email)

    everything = run(terminal_env, "search", "test_billing", "--json")
    assert everything.returncode == 0, everything.stderr
    results = json.loads(everything.stdout)
    assert len(results) == 3
    assert {r["session"]["title"] for r in results} == {"Billing flake", "Deploy notes"}
    assert all("test_billing" in r["snippet"] for r in results)

    prefix = str(billing.id).replace("-", "")[:12]
    narrowed = run(
        terminal_env, "search", "test_billing", "--session", prefix, "--role", "assistant", "--json"
    )
    assert narrowed.returncode == 0, narrowed.stderr
    [answer] = json.loads(narrowed.stdout)
    assert (answer["session"]["id"], answer["message"]["role"]) == (str(billing.id), "assistant")
    assert answer["message"]["seq"] == 2
    assert (
        len(
            json.loads(run(terminal_env, "search", "test_billing", "--limit", "1", "--json").stdout)
        )
        == 1
    )

    # In a pipe: a plain table, no escape codes.
    piped = run(terminal_env, "search", "fixture clock")
    assert piped.returncode == 0, piped.stderr
    assert "Billing flake" in piped.stdout and "assistant" in piped.stdout
    assert "fixture clock is frozen" in piped.stdout
    assert "\x1b[" not in piped.stdout

    # On a terminal with colors: the matched words stand out.
    colored = {name: value for name, value in terminal_env.items() if name != "NO_COLOR"}
    colored["TERM"] = "xterm-256color"
    child = spawn(colored, "search", "fixture")
    child.expect("Billing flake")
    child.expect(pexpect.EOF)
    shown = child.before or ""
    child.close()
    assert child.exitstatus == 0
    assert re.search(r"\x1b\[[0-9;]*mfixture", shown), shown  # the word itself is styled

    nothing = run(terminal_env, "search", "zebracorn")
    assert nothing.returncode == 0 and "Nothing matches" in nothing.stdout

    # Errors: one line on stderr, the documented exit codes.
    bad_role = run(terminal_env, "search", "test", "--role", "robot")
    assert bad_role.returncode == 2 and bad_role.stderr.startswith("error: --role")
    missing = run(terminal_env, "search", "test", "--session", "ffffffff")
    assert missing.returncode == 4 and missing.stderr.startswith("error: ")
    assert len(missing.stderr.strip().splitlines()) == 1
    invalid = run(terminal_env, "search", "-")
    assert invalid.returncode == 1 and invalid.stderr.startswith("error: ")
    assert "validation_error" in invalid.stderr
    logged_out = {
        **terminal_env,
        "CHAT_STORE_CONFIG_DIR": terminal_env["CHAT_STORE_CONFIG_DIR"] + "-none",
    }
    assert run(logged_out, "search", "test").returncode == 3


async def saved_login(
    server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Login:
    """A new account, logged in and kept as a person's saved login, in a config folder of the
    test's own (what `chat-store login` leaves)."""
    from chat_store.terminal import config

    monkeypatch.setenv("CHAT_STORE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("CHAT_STORE_API_KEY", raising=False)
    client, email = await new_account(server)
    login = config.Login(
        url=server.base_url,
        email=email,
        access_token=client.access_token,
        refresh_token=client.refresh_token,
    )
    await client.aclose()
    config.save(login)
    return login


async def test_two_processes_of_one_login_refresh_its_tokens_once(
    chat_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`chat` in one terminal, `follow` in another, one saved login: when their access tokens
    have expired, the first refreshes, and the second takes the tokens the first saved instead
    of spending the same refresh token again (which the service takes as theft, ending the
    login everywhere)."""
    from chat_store.terminal import config
    from chat_store.terminal.connect import open_client

    email = (await saved_login(chat_server, tmp_path, monkeypatch)).email
    first, second = open_client(), open_client()
    try:
        # Both access tokens expired (a token the service refuses stands in for one).
        first.access_token = second.access_token = "expired"
        assert first.me().email == email  # refreshes, and saves the new tokens
        assert second.me().email == email  # takes them from the login file
        assert second.refresh_token == first.refresh_token
        first.access_token = "expired"
        assert first.me().email == email  # its refresh token is still the login's
    finally:
        first.close()
        second.close()
    saved = config.load()
    assert saved is not None and saved.refresh_token == first.refresh_token


def _expired_token() -> str:
    """A JWT whose `exp` has passed (unsigned: the service refuses it either way)."""

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part({'sub': 'x', 'exp': 1})}.c2ln"


async def test_tokens_another_process_saved_are_refreshed_when_they_have_expired_too(
    chat_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chat left idle while another command refreshed the login, long enough for the tokens
    that command saved to expire as well: the chat takes the saved refresh token and refreshes
    it at once, rather than retrying with an access token that is refused again."""
    from chat_store.terminal import config
    from chat_store.terminal.connect import open_client

    login = await saved_login(chat_server, tmp_path, monkeypatch)
    email = login.email
    idle, other = open_client(), open_client()
    try:
        other.access_token = "expired"
        assert other.me().email == email  # refreshes and saves
        saved = config.load()
        assert saved is not None
        config.save(saved.with_tokens(_expired_token(), saved.refresh_token))

        idle.access_token = _expired_token()
        assert idle.me().email == email
        assert idle.refresh_token not in (login.refresh_token, saved.refresh_token)
    finally:
        idle.close()
        other.close()
    kept = config.load()
    assert kept is not None and kept.refresh_token == idle.refresh_token


@pytest.mark.parametrize("change", ["another account", "another service"])
async def test_a_refresh_never_takes_or_overwrites_a_newer_login(
    chat_server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """`chat-store login` run elsewhere while a chat runs: when the chat's access token expires,
    it refreshes its own login for itself, and the login file keeps the newer login."""
    from chat_store.terminal import config
    from chat_store.terminal.connect import open_client

    email = (await saved_login(chat_server, tmp_path, monkeypatch)).email
    second, other_email = await new_account(chat_server)
    running = open_client()
    newer = config.Login(
        url=chat_server.base_url if change == "another account" else "http://127.0.0.1:9",
        email=other_email,
        access_token=second.access_token,
        refresh_token=second.refresh_token,
    )
    await second.aclose()
    config.save(newer)
    try:
        running.access_token = "expired"
        assert running.me().email == email
        running.access_token = "expired"
        assert running.me().email == email  # its own refresh token, kept in memory
    finally:
        running.close()
    assert config.load() == newer


async def test_a_login_that_cannot_be_kept_says_where_and_why(
    chat_server: ServerProcess, terminal_env: dict[str, str], tmp_path: Path
) -> None:
    """The config folder cannot be made (a file stands there): one line naming the login file,
    not "cannot reach the database"; exit 1, nothing kept."""
    client, email = await account(chat_server)
    await client.aclose()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {**terminal_env, "CHAT_STORE_CONFIG_DIR": str(blocker / "config")}

    child = spawn(env, "login", "--url", chat_server.base_url, "--email", email)
    child.expect("Password:")
    child.sendline(PASSWORD)
    child.expect("error: ")
    child.expect(pexpect.EOF)
    told = " ".join(child.before.split())
    child.close()

    assert child.exitstatus == 1, told
    assert f"cannot keep the login in {blocker / 'config' / 'login.json'}" in told, told
    assert "database" not in told and PASSWORD not in told
    assert blocker.read_text() == ""
