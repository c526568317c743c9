"""Whose a tuned model is, and what jobspec may do with it: every ownership rule, in one place.

jobspec records on each model it creates the job, the fingerprint of its examples and the owning
workspace (each backend its own way: a description mark, labels), and a backend reads them back
as ``RemoteModel.job``, ``fingerprint`` and ``owner``. From those alone, a model's *standing*
relative to this workspace (and to a job's examples, when one is in question) is one of
``Standing``, and what jobspec may do with it follows from that standing:

- **adopt**: a create takes a model that is already there, instead of making a second one, only
  when it is the job's model of these examples (this workspace's, or an older jobspec's under
  the one id such a model could have), and not one that had FAILED before the create began;
- **recreate** (``apply --recreate-failed``): only this workspace's model, only when FAILED;
- **prune** (``apply --prune``): only this workspace's superseded models of a job, and only once
  the job's new model is ACTIVE, so that a job always keeps a model that works;
- **delete** (``jobspec delete``): this workspace's models; any other only when named and forced.

Another workspace's model, an older jobspec's that recorded no owner, and one jobspec did not
make are never adopted, pruned or recreated; every refusal says why in the same words.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from .backends.base import ACTIVE, FAILED, RemoteModel
from .identity import FINGERPRINT_PREFIX_LENGTH, Identity, tuned_model_id

MODEL_ID_CHOICES = 4  # ids a job's model may take on a service where ids are first come
# How plans show a model of the job that is not this workspace's: the text line, and the
# Markdown row's action and note.
FOREIGN_ACTION, FOREIGN_NOTE = "other workspace", "left alone"


class Standing(Enum):
    """A model relative to this workspace and, when one is asked about, a job's examples."""

    OWN_CURRENT = "own, current"  # this workspace's model of the job's examples
    OWN_SUPERSEDED = "own, superseded"  # this workspace's model of the job, of other examples
    OWN = "own"  # this workspace's, of another job (or no job was asked about)
    # The job's examples, by a jobspec from before owners were recorded, under the one id such a
    # model could have: taken as the job's model (kept, not trained again), never removed.
    LEGACY_CURRENT = "legacy, current"
    UNRECORDED = "unrecorded"  # jobspec made it but recorded no owner
    OTHER_OWNER = "another owner's"
    NOT_JOBSPECS = "not jobspec's"  # no mark of jobspec's at all

    @property
    def owned(self) -> bool:
        """This workspace's own: what it may prune, recreate and delete."""
        return self in (Standing.OWN_CURRENT, Standing.OWN_SUPERSEDED, Standing.OWN)

    @property
    def of_these_examples(self) -> bool:
        """Taken as the job's model of these examples (for plans and adoption)."""
        return self in (Standing.OWN_CURRENT, Standing.LEGACY_CURRENT)

    @property
    def label(self) -> str:
        """Whose it is, for people (`jobspec get`'s OWNER column)."""
        if self.owned:
            return "this workspace"
        return {Standing.LEGACY_CURRENT: "unrecorded", Standing.UNRECORDED: "unrecorded",
                Standing.OTHER_OWNER: "another workspace"}.get(self, "not jobspec's")


def standing(model: RemoteModel, owner_id: str, job: str | None = None,
             fingerprint: str | None = None, legacy_name: str | None = None) -> Standing:
    """``model``'s standing for the workspace ``owner_id`` and, when given, the job named ``job``
    with examples of ``fingerprint``. ``legacy_name`` is the one name a model of these examples
    could have had before owners were recorded (a backend whose ids are jobspec's says it)."""
    if not model.managed:
        return Standing.NOT_JOBSPECS
    of_job = job is not None and model.job == job
    same_examples = of_job and fingerprint is not None and model.fingerprint == fingerprint
    if model.owner is None:
        if same_examples and legacy_name is not None and model.name == legacy_name:
            return Standing.LEGACY_CURRENT
        return Standing.UNRECORDED
    if model.owner != owner_id:
        return Standing.OTHER_OWNER
    if same_examples:
        return Standing.OWN_CURRENT
    return Standing.OWN_SUPERSEDED if of_job else Standing.OWN


def whose(model: RemoteModel) -> str:
    """Why a model that is not this workspace's is not, for people: the one wording of every
    refusal to adopt, recreate, prune or delete it."""
    if not model.managed:
        return "jobspec did not create it"
    if model.owner is None:
        return "its owner was not recorded (an older jobspec made it)"
    return f"another workspace owns it (owner {model.owner})"


def foreign_note(model: RemoteModel) -> str:
    """A plan's line on a model of the job that another workspace (or no recorded one) owns."""
    who = "no recorded owner" if model.owner is None else f"owner {model.owner}"
    return f"belongs to another workspace ({who}): {FOREIGN_NOTE}"


# -- finding a job's models -------------------------------------------------------------------


def newest(models: Sequence[RemoteModel]) -> RemoteModel:
    """The latest created of ``models`` (RFC 3339 times in UTC sort as strings)."""
    return max(models, key=lambda m: (m.create_time or "", m.name))


def current_model(models: Iterable[RemoteModel], owner_id: str, job: str, fingerprint: str,
                  legacy_name: str | None = None) -> RemoteModel | None:
    """Of ``models``, the job's model of these examples (``Standing.of_these_examples``): the
    newest that has not failed, else the newest. Another owner's model is never current,
    whatever its id or its state."""
    mine = [m for m in models if standing(m, owner_id, job, fingerprint,
                                          legacy_name).of_these_examples]
    if not mine:
        return None
    return newest([m for m in mine if m.state != FAILED] or mine)


def by_job(models: Iterable[RemoteModel]) -> dict[str, list[RemoteModel]]:
    """jobspec's ``models`` by the job recorded on each, each job's in listing order. Every model
    ``job_models`` finds for a job (current, superseded or foreign) records that job, so a job's
    group stands for the whole listing there; comparing many jobs with one listing then looks
    at each model once, not once per job (which made plans quadratic in jobs x models)."""
    grouped: dict[str, list[RemoteModel]] = {}
    for model in models:
        if model.job is not None:
            grouped.setdefault(model.job, []).append(model)
    return grouped


@dataclass(frozen=True)
class JobModels:
    """A job's models on the service, sorted by standing, each group in listing order."""

    current: RemoteModel | None  # the job's model of these examples
    superseded: tuple[RemoteModel, ...]  # this workspace's of other examples: prune may go
    foreign: tuple[RemoteModel, ...]  # the job's models that are not this workspace's: shown


def job_models(models: Sequence[RemoteModel], owner_id: str, job: str, fingerprint: str,
               legacy_name: str | None = None) -> JobModels:
    """The job's current, superseded and foreign models of ``models`` (the whole listing, or
    the job's group of it from ``by_job``: the same answer). This workspace's other models of
    the same examples (an earlier, failed try) are none of these: a retry, not superseded."""
    current = current_model(models, owner_id, job, fingerprint, legacy_name)
    superseded, foreign = [], []
    for model in models:
        if model.job != job:
            continue
        found = standing(model, owner_id, job, fingerprint, legacy_name)
        if found is Standing.OWN_SUPERSEDED:
            superseded.append(model)
        elif not found.owned and (current is None or model.name != current.name):
            foreign.append(model)
    return JobModels(current, tuple(superseded), tuple(foreign))


def tuned_model_ids(identity: Identity, owner_id: str) -> list[str]:
    """The ids a job's model may take where one namespace holds every owner's models (the
    Gemini API, the local service), in the order to try them. First ``<name>-<8 hex of the
    fingerprint>`` (``Identity.tuned_model_id``), the id every model had before owners were told
    apart, so that a model an owner has keeps its id. Then, for an owner whose first id another
    owner's model holds, the same name with 8 hex of the fingerprint mixed with its owner id:
    the same on every run, and not another owner's. Every id has the first's length, so each
    fits where it does. An owner finds its model by what is recorded on it (job, fingerprint,
    owner), not by its id, so which of these it got does not matter later."""
    name = identity.tuned_model_id[:-FINGERPRINT_PREFIX_LENGTH - 1]
    ids = [identity.tuned_model_id]
    for choice in range(1, MODEL_ID_CHOICES):
        mixed = hashlib.sha256(f"{identity.fingerprint}:{owner_id}:{choice}".encode()).hexdigest()
        ids.append(tuned_model_id(name, mixed))
    return ids


# -- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether jobspec may act on a model, and why, for people."""

    allowed: bool
    reason: str


def _not_these_examples(model: RemoteModel, found: Standing) -> str:
    if found is Standing.OWN_SUPERSEDED:
        return f"it was trained on other examples (fingerprint {model.fingerprint})"
    if found is Standing.OWN:
        return f"it is job {model.job}'s model"
    return whose(model)


def adopt(model: RemoteModel, owner_id: str, job: str, fingerprint: str,
          legacy_name: str | None = None, existed: Iterable[str] = ()) -> Decision:
    """Whether a create takes ``model``, already there, instead of making another: only the
    job's model of these examples, and not one that had FAILED before the create began
    (``existed``: the names there before it, where a backend that chooses its own ids knows
    them; a FAILED model is replaced only on request, by --recreate-failed)."""
    found = standing(model, owner_id, job, fingerprint, legacy_name)
    if not found.of_these_examples:
        return Decision(False, _not_these_examples(model, found))
    if model.state == FAILED and model.name in set(existed):
        return Decision(False, "it had FAILED before this create (--recreate-failed replaces "
                               "it)")
    return Decision(True, "an earlier request already created it")


def recreate(model: RemoteModel, owner_id: str) -> Decision:
    """Whether --recreate-failed may delete ``model`` to create the job's model again: only this
    workspace's, only when FAILED."""
    if not standing(model, owner_id).owned:
        return Decision(False, whose(model))
    if model.state != FAILED:
        return Decision(False, f"it is {model.state}, not FAILED")
    return Decision(True, "it FAILED: deleted and created again")


def prune(model: RemoteModel, owner_id: str, job: str, fingerprint: str,
          replacement: str, replacement_state: str) -> Decision:
    """Whether --prune may delete ``model``, given the job's new model (``replacement``, now in
    ``replacement_state``): only this workspace's superseded model of the job, and only once
    its replacement is ACTIVE (a job whose new model failed or still trains keeps the model
    that works)."""
    found = standing(model, owner_id, job, fingerprint)
    if found is not Standing.OWN_SUPERSEDED:
        return Decision(False, "it is the job's current model"
                        if found is Standing.OWN_CURRENT else _not_these_examples(model, found))
    if replacement_state != ACTIVE:
        return Decision(False, f"{replacement} is not ACTIVE yet")
    return Decision(True, f"superseded by {replacement}")


def delete(model: RemoteModel, owner_id: str, named: bool, force: bool) -> Decision:
    """Whether `jobspec delete` may remove ``model``: this workspace's, or any model named by its
    name with --force; a model found by its job's name that is not this workspace's is left
    alone, with how to delete it anyway."""
    if standing(model, owner_id).owned:
        return Decision(True, "this workspace's")
    if named and force:
        return Decision(True, "named, with --force")
    if named:
        return Decision(False, f"{whose(model)}; add --force to delete it anyway")
    return Decision(False, f"{whose(model)}; to delete it, name it: jobspec delete {model.name} "
                           "--force")
