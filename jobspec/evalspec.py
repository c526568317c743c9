"""A job's eval section: the prompts (with their system instruction and history), what each
expects, and the gates, read from the job file with every problem placed at its field.
``spec.py`` reads the rest of the job file and calls ``read_eval``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .conversation import USER, Conversation, ConversationProblem, Turn, turns_from_history
from .yamlload import FieldPath, format_path

MATCHERS = ("equals", "contains", "regex", "one_of", "not_contains")

# Where the job file's problems go: (field path, message, whether to point at the key).
ErrorSink = Callable[..., None]


@dataclass(frozen=True)
class Expectation:
    kind: str  # one of MATCHERS
    value: str | tuple[str, ...]
    case_sensitive: bool = True

    def as_dict(self) -> dict[str, Any]:
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        result: dict[str, Any] = {self.kind: value}
        if not self.case_sensitive:
            result["case_sensitive"] = False
        return result


@dataclass(frozen=True)
class EvalPrompt:
    input: str
    expect: Expectation
    system: str | None = None  # its own system instruction, over the job's
    history: tuple[Turn, ...] = ()  # earlier turns, user first, model last; input comes next

    def conversation(self, job_system: str | None) -> Conversation:
        """What generateContent is asked: the system instruction (the prompt's, else the
        job's), the history, then the input as the user's turn."""
        return Conversation((*self.history, Turn(USER, self.input)),
                            self.system if self.system is not None else job_system)


@dataclass(frozen=True)
class Deployment:
    """Where a tuned open model is deployed on Vertex AI for its eval (``eval.deploy``): one
    replica of this machine, with these accelerators (Vertex's ``machineSpec``)."""

    machine_type: str
    accelerator_type: str
    accelerator_count: int

    def as_dict(self) -> dict[str, Any]:
        return {"machine_type": self.machine_type, "accelerator_type": self.accelerator_type,
                "accelerator_count": self.accelerator_count}


@dataclass(frozen=True)
class EvalSpec:
    prompts: tuple[EvalPrompt, ...]
    min_pass_rate: float = 1.0
    compare_base: bool = False
    generation_config: dict[str, Any] = field(default_factory=dict)
    # The tuned model must pass significantly more prompts than the base (exact McNemar test,
    # p <= significance); implies compare_base.
    require_improvement: bool = False
    significance: float = 0.05
    samples: int = 1  # answers asked per prompt (sampled generation)
    deploy: Deployment | None = None  # Vertex open models: where the eval deploys the model


def read_eval(spec: dict[str, Any] | None, error: ErrorSink,
              schema_fields: set[str]) -> EvalSpec | None:
    """The eval section ``spec`` (already checked by the schema; None: the job has none);
    problems the schema cannot state go to ``error``, never twice for a field the schema
    already reported (``schema_fields``)."""
    if spec is None:
        return None
    prompts = []
    for index, prompt in enumerate(spec["prompts"]):
        where = ("eval", "prompts", index)
        prompts.append(EvalPrompt(prompt["input"],
                                  _expectation(prompt["expect"], where + ("expect",), error),
                                  prompt.get("system"),
                                  _history(prompt, where, error, schema_fields)))
    improve = spec.get("require_improvement", False)
    if improve and spec.get("compare_base") is False:
        error(("eval", "compare_base"), "require_improvement compares the tuned model with the "
              "base model: remove compare_base: false", at_key=True)
    # With require_improvement the significance test is the gate: min_pass_rate defaults to 0.
    return EvalSpec(prompts=tuple(prompts),
                    min_pass_rate=spec.get("min_pass_rate", 0.0 if improve else 1.0),
                    compare_base=spec.get("compare_base", False) or improve,
                    generation_config=dict(spec.get("generation_config", {})),
                    require_improvement=improve,
                    significance=spec.get("significance", 0.05),
                    samples=spec.get("samples", 1),
                    deploy=_deployment(spec.get("deploy")))


def _deployment(deploy: dict[str, Any] | None) -> Deployment | None:
    if deploy is None:
        return None
    return Deployment(deploy["machine_type"], deploy["accelerator_type"],
                      deploy["accelerator_count"])


def _history(prompt: dict[str, Any], where: FieldPath, error: ErrorSink,
             schema_fields: set[str]) -> tuple[Turn, ...]:
    """A prompt's history, checked by conversation.py's rules; a problem is reported at its
    field (``eval.prompts[1].history[2].role``), unless the schema has already reported one
    inside that history."""
    if "history" not in prompt:
        return ()
    at = where + ("history",)
    if any(field == format_path(at) or field.startswith((format_path(at) + "[",
                                                          format_path(at) + "."))
           for field in schema_fields):
        return ()
    try:
        return turns_from_history(prompt["history"], "history")
    except ConversationProblem as problem:
        error(where + _field_path(problem.field), problem.message)
        return ()


def _expectation(expect: str | dict, field_path: FieldPath, error: ErrorSink) -> Expectation:
    if isinstance(expect, str):
        return Expectation("equals", expect)
    kinds = [k for k in MATCHERS if k in expect]
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else "none"
        error(field_path, f"give exactly one of {', '.join(MATCHERS)} (found: {found})")
        return Expectation("equals", "")
    kind = kinds[0]
    case_sensitive = expect.get("case_sensitive", True)
    value = expect[kind]
    if kind == "regex":
        try:
            re.compile(value, 0 if case_sensitive else re.IGNORECASE)
        except re.error as exc:
            error(field_path + ("regex",), f"invalid regular expression: {exc}")
    return Expectation(kind, tuple(value) if kind == "one_of" else value, case_sensitive)


def _field_path(field: str) -> FieldPath:
    """``history[2].role`` → ``("history", 2, "role")`` (format_path's inverse)."""
    return tuple(int(index) if index else name
                 for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", field))
