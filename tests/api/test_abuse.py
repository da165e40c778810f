"""Limits that must hold against many credentials or many concurrent requests."""

from __future__ import annotations

import asyncio

import httpx

from tests.assertions import assert_problem
from tests.conftest import AppWith
from tests.factories import API, Factory

ME = f"{API}/users/me"
KEYS = f"{API}/api-keys"


async def test_all_of_a_users_credentials_share_one_rate_limit(limited_app: AppWith) -> None:
    async with limited_app(rate_limit_read="4/minute") as limited:
        await _share_one_rate_limit(limited.client)


async def _share_one_rate_limit(client: httpx.AsyncClient) -> None:
    factory = Factory(client)
    account = await factory.account()
    first = (await factory.api_key(account, name="first"))["key"]
    second = (await factory.api_key(account, name="second"))["key"]
    token = (await factory.login(account.email, account.password))["access_token"]
    credentials = [
        {"X-API-Key": first},
        {"X-API-Key": second},
        account.headers,
        {"Authorization": f"Bearer {token}"},
    ]

    answers = [await client.get(ME, headers=headers) for headers in credentials]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 200]
    assert [answer.headers["RateLimit-Remaining"] for answer in answers] == ["3", "2", "1", "0"]
    # The user's budget is spent, whichever credential asks next; a fresh key brings none.
    for headers in credentials:
        assert_problem(await client.get(ME, headers=headers), 429, "rate_limited")
    third = await client.post(KEYS, json={"name": "third"}, headers=account.headers)
    assert third.status_code == 201  # writes have a budget of their own
    assert_problem(
        await client.get(ME, headers={"X-API-Key": third.json()["key"]}), 429, "rate_limited"
    )
    # Another user is not affected.
    other = await factory.account()
    assert (await client.get(ME, headers=other.headers)).status_code == 200


async def test_concurrent_key_creates_stay_within_the_cap(limited_app: AppWith) -> None:
    async with limited_app(max_api_keys_per_user=3) as limited:
        client = limited.client
        account = await Factory(client).account()

        answers = await asyncio.gather(
            *(client.post(KEYS, json={"name": f"k{i}"}, headers=account.headers) for i in range(10))
        )

        statuses = sorted(answer.status_code for answer in answers)
        assert statuses == [201] * 3 + [409] * 7
        assert len((await client.get(KEYS, headers=account.headers)).json()["data"]) == 3


async def test_concurrent_login_guesses_check_at_most_the_budget(limited_app: AppWith) -> None:
    async with limited_app(login_failures_per_account="10/15minutes") as limited:
        client = limited.client
        account = await Factory(client).account()
        wrong = {"username": account.email, "password": "not the password"}
        right = {"username": account.email, "password": account.password}

        answers = await asyncio.gather(
            *(client.post(f"{API}/auth/token", data=form) for form in [wrong] * 18 + [right])
        )

        statuses = [answer.status_code for answer in answers]
        # At most 10 passwords were checked; the others were refused before theirs was.
        assert statuses.count(401) + statuses.count(200) == 10, statuses
        assert statuses.count(429) == 9, statuses
        for answer in answers:
            if answer.status_code == 429:
                assert_problem(answer, 429, "rate_limited")
                assert int(answer.headers["Retry-After"]) >= 1


async def test_a_successful_login_is_not_counted_as_a_failure(limited_app: AppWith) -> None:
    async with limited_app(login_failures_per_account="3/15minutes") as limited:
        client = limited.client
        factory = Factory(client)
        account = await factory.account()
        for _ in range(5):
            await factory.login(account.email, account.password)
        form = {"username": account.email, "password": "not the password"}
        failures = [await client.post(f"{API}/auth/token", data=form) for _ in range(4)]
        assert [answer.status_code for answer in failures] == [401, 401, 401, 429]


async def test_a_password_change_draws_on_the_accounts_failed_logins(limited_app: AppWith) -> None:
    """With a stolen access token, guessing current_password is guessing the password: it is
    counted with the failed logins, and a right one is not."""
    async with limited_app(login_failures_per_account="3/15minutes") as limited:
        client = limited.client
        factory = Factory(client)
        account = await factory.account()
        token = (await factory.login(account.email, account.password))["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def change(current: str) -> dict[str, str]:
            return {"password": "a new password 1", "current_password": current}

        rename = await client.patch(ME, json={"display_name": "renamed"}, headers=headers)
        assert rename.status_code == 200
        wrong = [
            await client.patch(ME, json=change(f"guess {i}"), headers=headers) for i in range(2)
        ]
        assert [answer.status_code for answer in wrong] == [422, 422]
        failed_login = await client.post(
            f"{API}/auth/token", data={"username": account.email, "password": "guess 3"}
        )
        assert failed_login.status_code == 401

        over = await client.patch(ME, json=change(account.password), headers=headers)
        assert_problem(over, 429, "rate_limited")
        assert int(over.headers["Retry-After"]) >= 1
        # Refused before the check: the password is unchanged and the login still works.
        login = await client.post(
            f"{API}/auth/token", data={"username": account.email, "password": account.password}
        )
        assert login.status_code == 429
        me = await client.get(ME, headers=headers)
        assert me.status_code == 200 and me.json()["display_name"] == "renamed"


async def test_a_right_current_password_is_not_counted_as_a_failure(
    limited_app: AppWith,
) -> None:
    async with limited_app(login_failures_per_account="2/15minutes") as limited:
        client = limited.client
        factory = Factory(client)
        account = await factory.account()
        password = account.password
        for i in range(3):
            token = (await factory.login(account.email, password))["access_token"]
            new_password = f"changed password {i}"
            answer = await client.patch(
                ME,
                json={"password": new_password, "current_password": password},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200
            password = new_password
        assert (await factory.login(account.email, password))["access_token"]
