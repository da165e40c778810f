"""A streaming writer in a process of its own, for the crash-and-resume test.

    python -m tests.e2e.writer_process BASE_URL API_KEY SESSION_ID DELTAS

Appends a user turn and a pending assistant answer, streams DELTAS deltas into it, prints the
assistant message id, then waits for a kill (it never completes the answer).
"""

from __future__ import annotations

import sys
import time

from chat_store.client import ChatStoreClient


def delta_text(index: int) -> str:
    # Multibyte and astral characters on purpose: offsets are code points, not bytes.
    return f"tök{index} 🙂 "


def main() -> None:
    base_url, api_key, session_id, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with ChatStoreClient(base_url, api_key=api_key) as client:
        client.append_message(session_id, "user", "Explain the failing test")
        answer = client.append_message(session_id, "assistant", status="pending")
        offset = 0
        for index in range(count):
            text = delta_text(index)
            offset = client.append_delta(session_id, answer.id, text, offset).length
        print(answer.id, flush=True)
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main()
