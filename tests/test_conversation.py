"""The conversation's one home (jobspec/conversation.py) as a seam: the two JSON forms, the
rules every training conversation and eval history keeps, and the local wire's line."""

import json

import pytest

from jobspec import wire
from jobspec.conversation import (MODEL, USER, Conversation, ConversationProblem, Turn,
                                  from_contents, from_messages, to_contents, to_messages)

pytestmark = pytest.mark.timeout(30)

VERTEX_LINE = {"systemInstruction": {"parts": [{"text": "Answer briefly."}]},
               "contents": [{"role": "user", "parts": [{"text": "What is 2+2?"}]},
                            {"role": "model", "parts": [{"text": "4"}]},
                            {"role": "user", "parts": [{"text": "And 3+3?"}]},
                            {"role": "model", "parts": [{"text": "6"}]}]}
MESSAGES = {"messages": [{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": "What is 2+2?"},
                         {"role": "assistant", "content": "4"},
                         {"role": "user", "content": "And 3+3?"},
                         {"role": "assistant", "content": "6"}]}


def test_the_two_forms_of_one_conversation_are_equal_and_round_trip():
    conversation = from_contents(VERTEX_LINE)
    assert conversation == from_messages(MESSAGES)
    assert conversation.system == "Answer briefly."
    assert [t.role for t in conversation.turns] == [USER, MODEL, USER, MODEL]
    assert to_contents(conversation) == VERTEX_LINE
    assert to_messages(conversation) == MESSAGES
    assert not conversation.is_one_turn
    assert Conversation.one_turn("a", "b").is_one_turn


def test_parts_are_joined_and_a_content_without_a_role_is_the_users():
    line = {"contents": [{"parts": [{"text": "Hel"}, {"text": "lo"}]},
                         {"role": "model", "parts": [{"text": "Hi"}]}]}
    assert from_contents(line) == Conversation.one_turn("Hello", "Hi")


@pytest.mark.parametrize("record, field, words", [
    ({"contents": [{"role": "model", "parts": [{"text": "x"}]}]}, "contents[0].role",
     "roles out of order"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]}]}, "contents",
     "ends with a user turn"),
    ({"contents": [{"role": "user", "parts": [{"text": "x"}]},
                   {"role": "tool", "parts": [{"text": "y"}]}]}, "contents[1].role",
     "unknown role 'tool'"),
    ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png"}}]},
                   {"role": "model", "parts": [{"text": "y"}]}]}, "contents[0].parts[0]",
     "only text parts are supported"),
    ({"contents": [{"role": "user", "parts": [{"text": "  "}]},
                   {"role": "model", "parts": [{"text": "y"}]}]}, "contents[0]", "empty"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "y"}]}, "messages[1].role",
     "only as the first message"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "function", "content": "y"}]},
     "messages[1].role", "unknown role 'function'"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": "y", "weight": 0}]}, "messages",
     "nothing to learn"),
    ({"messages": [{"role": "user", "content": "x", "weight": 0},
                   {"role": "assistant", "content": "y"}]}, "messages[0].weight",
     "only a model"),
    ({"messages": [{"role": "user", "content": ""},
                   {"role": "assistant", "content": "y"}]}, "messages[0].content",
     "must not be empty"),
])
def test_a_bad_conversation_names_its_field_and_the_rule(record, field, words):
    read = from_contents if "contents" in record else from_messages
    with pytest.raises(ConversationProblem) as caught:
        read(record)
    assert caught.value.field == field
    assert words in caught.value.message


def test_a_weight_zero_turn_is_context_and_travels_on_the_local_wire():
    conversation = from_messages({"messages": [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bad", "weight": 0},
        {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Good"}]})
    assert [t.trained for t in conversation.turns] == [True, False, True, True]
    line = json.loads(wire.conversation_line(conversation))
    assert line["contents"][1]["weight"] == 0 and "weight" not in line["contents"][3]
    assert wire.read_upload_line(line) == conversation
    # Without the local wire's weights, a contents record's weight is not read.
    assert "weight" not in json.dumps(to_contents(conversation))


def test_a_one_turn_conversation_keeps_todays_upload_line():
    one = Conversation.one_turn("question", "answer")
    assert wire.conversation_line(one) == wire.upload_line("question", "answer")
    assert wire.read_upload_line(json.loads(wire.upload_line("q", "a"))) == \
        Conversation((Turn(USER, "q"), Turn(MODEL, "a")))
    with_system = one.with_system("Be terse.")
    assert json.loads(wire.conversation_line(with_system))["systemInstruction"] == \
        {"parts": [{"text": "Be terse."}]}
    assert with_system.with_system("other").system == "Be terse."
