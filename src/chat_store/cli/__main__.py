"""`python -m chat_store.cli`: the `chat-store` command."""

from chat_store.cli import main

main()
