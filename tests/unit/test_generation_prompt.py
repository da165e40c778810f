"""What the model is sent: the documents template, and text the store can keep."""

from __future__ import annotations

from chat_store.services.generation.prompt import render_documents, render_user_message
from chat_store.services.generation.provider import clean_text


def test_documents_are_numbered_in_order_and_documents_without_text_left_out() -> None:
    context = {
        "documents": [
            {"id": 7, "name": 'a "quoted" <name> & co', "url": "https://x.test/a", "text": " A "},
            {"id": "no-text", "score": 0.9},
            "not a document",
            {"snippet": "B"},
        ],
        "citations": [{"document": 7}],
    }

    assert render_documents(context) == (
        "<documents>\n"
        '<document index="1" id="7" title="a &quot;quoted&quot; &lt;name> &amp; co" '
        'source="https://x.test/a">\nA\n</document>\n'
        '<document index="2">\nB\n</document>\n'
        "</documents>"
    )


def test_a_message_without_documents_is_sent_as_written() -> None:
    assert render_user_message("Why?", None) == "Why?"
    assert render_user_message("Why?", {"documents": "not a list"}) == "Why?"
    assert render_user_message("Why?", {"documents": [{"id": "x"}]}) == "Why?"


def test_text_the_store_cannot_keep_is_cleaned() -> None:
    assert clean_text("a\x00b") == "ab"
    assert clean_text("x\ud800y") == "x\ufffdy"
    assert clean_text("plain ⏰ é") == "plain ⏰ é"
