"""The LLM_* and GENERATION_* settings, read from the environment as operators write them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chat_store.settings import Settings

NAMES = ("LLM_BASE_URL", "LLM_API_KEY", "LLM_MODEL", "LLM_MODELS", "LLM_MAX_OUTPUT_TOKENS")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


def from_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_without_a_base_url_generation_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(monkeypatch, LLM_BASE_URL="", LLM_MODEL="")

    assert settings.generation_enabled is False
    assert settings.allowed_models == []


def test_a_base_url_needs_a_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="LLM_MODEL"):
        from_env(monkeypatch, LLM_BASE_URL="http://127.0.0.1:11434/v1")


def test_the_default_model_comes_first_and_the_list_adds_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = from_env(
        monkeypatch,
        LLM_BASE_URL="http://127.0.0.1:11434/v1",
        LLM_MODEL="llama3.2",
        LLM_MODELS="qwen2.5-coder, llama3.2,mistral",
    )

    assert settings.allowed_models == ["llama3.2", "qwen2.5-coder", "mistral"]
    json_list = from_env(monkeypatch, LLM_MODELS='["a", "b"]')
    assert json_list.llm_models == ["a", "b"]


def test_the_api_key_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = from_env(
        monkeypatch,
        LLM_BASE_URL="https://api.openai.com/v1",
        LLM_MODEL="gpt-4o-mini",
        LLM_API_KEY="sk-live-abcdef",
    )

    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-live-abcdef"
    assert "sk-live-abcdef" not in repr(settings)
    assert "sk-live-abcdef" not in str(settings.model_dump())
