"""generateContent, as the Gemini API and Vertex AI both define it: a conversation in (its
system instruction as ``systemInstruction``, its turns as ``contents``), the first candidate's
text out. The job file's generation config is snake_case; the wire's is camelCase."""

from __future__ import annotations

from typing import Any

from ..client import ApiClient
from ..conversation import Conversation, to_contents
from ..errors import PermanentBackendError

_CONFIG_NAMES = {"temperature": "temperature", "top_p": "topP", "top_k": "topK",
                 "max_output_tokens": "maxOutputTokens"}


def request_body(conversation: Conversation, config: dict[str, Any]) -> dict[str, Any]:
    """The GenerateContentRequest: ``systemInstruction`` (when there is one) and ``contents``
    (the turns, the last the user's), then ``generationConfig``. A one-turn prompt with no
    system instruction is the body jobspec always sent."""
    return {**to_contents(conversation),
            "generationConfig": {_CONFIG_NAMES.get(k, k): v for k, v in config.items()}}


def answer_text(answer: dict[str, Any], target: str) -> str:
    candidates = answer.get("candidates") or []
    if not candidates:
        reason = answer.get("promptFeedback", {}).get("blockReason", "no candidates")
        raise PermanentBackendError(f"{target} gave no answer ({reason})")
    parts = candidates[0].get("content", {}).get("parts", [])
    return "".join(p.get("text", "") for p in parts)


def generate(client: ApiClient, target: str, conversation: Conversation,
             config: dict[str, Any], *, version: str | None = None) -> str:
    answer = client.request("POST", f"{target}:generateContent",
                            body=request_body(conversation, config), version=version)
    return answer_text(answer, target)
