"""Accounts without HTTP: `users create`, `api-keys create` (the first account and key of a
fresh deployment)."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chat_store.cli.running import command_group, run_on_database
from chat_store.settings import get_settings

users = command_group("Manage users without HTTP.")
api_keys = command_group("Manage API keys without HTTP.")


@users.command("create")
def create_user(
    email: Annotated[str, typer.Option(help="Login email.")],
    # Optional to the help (it is asked for, twice and hidden, when left out), never to the
    # command: the prompt fills it in, and asks again on an empty answer.
    password: Annotated[
        str | None,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            show_default=False,
            help="8+ chars; asked for (twice, hidden) when left out.",
        ),
    ] = None,
    display_name: Annotated[str | None, typer.Option(help="Shown name.")] = None,
) -> None:
    """Create a user (the first account of a fresh deployment)."""
    from chat_store.schemas.users import UserCreate
    from chat_store.services import auth as auth_service

    body = UserCreate(email=email, password=password, display_name=display_name)
    settings = get_settings()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
        async with sessionmaker() as db, db.begin():
            user = await auth_service.create_user(
                db, settings, str(body.email), body.password, body.display_name
            )
        return str(user.id)

    print(run_on_database(work))


@api_keys.command("create")
def create_api_key(
    email: Annotated[str, typer.Option(help="Owner's email.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "cli",
) -> None:
    """Create an API key for a user and print the secret (shown once)."""
    from chat_store.schemas.api_keys import ApiKeyCreate
    from chat_store.services import api_keys as api_key_service

    body = ApiKeyCreate(name=name)
    settings = get_settings()

    async def work(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
        async with sessionmaker() as db, db.begin():
            created = await api_key_service.create_api_key_for_email(db, settings, email, body)
        return created.key

    print(run_on_database(work))
