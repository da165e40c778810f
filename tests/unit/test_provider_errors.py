"""What a provider's error message keeps once the service has redacted its key."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from chat_store.services.generation.provider import Provider
from chat_store.settings import Settings

KEY = "sk-proj-" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7"


def _provider(key: str) -> Provider:
    return Provider(
        Settings(
            _env_file=None, llm_base_url="http://127.0.0.1:9/v1", llm_model="m", llm_api_key=key
        )  # type: ignore[call-arg]
    )


@pytest.mark.parametrize(
    "quoted",
    [KEY, quote(KEY + "/="), KEY[:-1], KEY[3:25], f"{KEY[:12]}****{KEY[-12:]}"],
    ids=["whole", "url-encoded", "cut", "middle", "masked"],
)
def test_no_run_of_12_of_the_key_is_kept(quoted: str) -> None:
    provider = _provider(KEY + "/=")

    said = provider._redact(f"Incorrect API key provided: {quoted}. Get one at platform")

    secret = KEY + "/="
    assert not any(secret[i : i + 12] in said for i in range(len(secret) - 11)), said
    assert said.startswith("Incorrect API key provided: [redacted]")
    assert said.endswith("Get one at platform")


def test_a_placeholder_key_is_redacted_whole_only() -> None:
    provider = _provider("sk-no-key-required")

    assert provider._redact("Field required; key sk-no-key-required") == (
        "Field required; key [redacted]"
    )


def test_a_long_error_page_is_cut_before_it_is_searched() -> None:
    provider = _provider(KEY)

    said = provider._redact("x" * 1_000_000 + KEY)

    assert said == "x" * 500
