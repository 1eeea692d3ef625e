"""Registered models: names with numbered versions and movable aliases, and the one resolver of
model references that every route taking a model id goes through.

A reference names a model three ways: its id (`model_…`), a version by alias (`churn@production`)
or by number (`churn/versions/3`). Names and aliases are slugs, so a `@` or a `/` in a reference
says which kind it is, and no model id can be read as either.

Every change to a registered model (a new version, an alias made, moved or deleted) first locks
the registered model's row: changes to one name happen one at a time, so version numbers are
taken in turn (the unique constraint on (registered model, number) is the backstop) and two
moves of one alias cannot interleave. A model's row is locked before an alias is pointed at it,
as `models.delete_model` locks it before looking for aliases: an alias never points at a
deleted model.
"""

import re
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.models import AliasMove, Model, ModelAlias, ModelVersion, RegisteredModel, new_id, utcnow
from app.problems import Conflict, InvalidInput, NotFound
from app.schemas import (
    AliasMoveOut,
    AliasOut,
    ModelVersionOut,
    RegisteredModelDetail,
    RegisteredModelOut,
)
from app.services import webhooks
from app.services.pagination import newest_first
from trainer.spec import SLUG, SpecIssue

MODEL_ID_PREFIX = "model_"  # `new_id("model")`
REFERENCE = re.compile(
    rf"(?P<name>{SLUG})(?:@(?P<alias>{SLUG})|/versions/(?P<version>[1-9][0-9]{{0,8}}))"
)


@dataclass(frozen=True)
class Reference:
    """A registered model's version, by alias or by number (exactly one of them)."""

    name: str
    alias: str | None = None
    version: int | None = None


def parse(reference: str) -> Reference | None:
    """The registered version a reference names; None for anything else (a model's id)."""
    match = REFERENCE.fullmatch(reference)
    if match is None:
        return None
    version = match["version"]
    return Reference(match["name"], match["alias"], None if version is None else int(version))


def names_stored_model(text: str) -> bool:
    """Whether `text` names one of the tenant's models (an id or a registered version), where
    a field also takes another kind of name (a Hugging Face model's)."""
    return text.startswith(MODEL_ID_PREFIX) or parse(text) is not None


def find_model(session: Session, tenant_id: str, reference: str) -> Model | None:
    """The tenant's live (not deleted) model that `reference` names: by id, `name@alias` or
    `name/versions/N`; None when there is none."""
    stmt = select(Model).where(Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
    registered = parse(reference)
    if registered is None:
        return session.scalar(stmt.where(Model.id == reference))
    stmt = (
        stmt.join(ModelVersion, ModelVersion.model_id == Model.id)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.registered_model_id)
        .where(RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == registered.name)
    )
    if registered.alias is not None:
        stmt = stmt.join(ModelAlias, ModelAlias.version_id == ModelVersion.id).where(
            ModelAlias.registered_model_id == RegisteredModel.id,
            ModelAlias.alias == registered.alias,
        )
    else:
        stmt = stmt.where(ModelVersion.number == registered.version)
    return session.scalar(stmt)


def aliases_of(session: Session, model_id: str) -> list[str]:
    """The aliases that point at a version of this model, as `name@alias`."""
    rows = session.execute(
        select(RegisteredModel.name, ModelAlias.alias)
        .join(ModelVersion, ModelVersion.registered_model_id == RegisteredModel.id)
        .join(ModelAlias, ModelAlias.version_id == ModelVersion.id)
        .where(ModelVersion.model_id == model_id)
        .order_by(RegisteredModel.name, ModelAlias.alias)
    ).all()
    return [f"{name}@{alias}" for name, alias in rows]


def _of_tenant(tenant_id: str, name: str) -> Select:
    return select(RegisteredModel).where(
        RegisteredModel.tenant_id == tenant_id, RegisteredModel.name == name
    )


def get_registered(session: Session, tenant_id: str, name: str) -> RegisteredModel:
    registered = session.scalar(_of_tenant(tenant_id, name))
    if registered is None:
        raise NotFound("registered model", name, by="name")
    return registered


def _locked(session: Session, tenant_id: str, name: str) -> RegisteredModel:
    """The registered model, its row locked until the transaction ends; 404 if there is none."""
    registered = session.scalar(_of_tenant(tenant_id, name).with_for_update())
    if registered is None:
        raise NotFound("registered model", name, by="name")
    return registered


def _locked_or_made(session: Session, tenant_id: str, name: str) -> RegisteredModel:
    """The registered model, made if it is new, its row locked until the transaction ends."""
    registered = session.scalar(_of_tenant(tenant_id, name).with_for_update())
    if registered is not None:
        return registered
    try:
        with session.begin_nested():  # a savepoint: a name made meanwhile undoes only this
            registered = RegisteredModel(id=new_id("rmodel"), tenant_id=tenant_id, name=name)
            session.add(registered)
    except IntegrityError:  # made by a concurrent registration, which has committed
        return _locked(session, tenant_id, name)
    return registered


def list_registered(
    session: Session, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[RegisteredModel], str | None]:
    stmt = select(RegisteredModel).where(RegisteredModel.tenant_id == tenant_id)
    return newest_first(session, stmt, RegisteredModel, limit, cursor)


def register(
    session: Session,
    tenant_id: str,
    name: str,
    model: Model,
    key_id: str | None = None,
    job_id: str | None = None,
) -> ModelVersion:
    """Make the tenant's `model` the next version of `name` (made with its first version),
    registered by an API key or by the job that made the model. `409` if it is a version of
    that name already."""
    registered = _locked_or_made(session, tenant_id, name)
    existing = session.scalar(
        select(ModelVersion.number).where(
            ModelVersion.registered_model_id == registered.id, ModelVersion.model_id == model.id
        )
    )
    if existing is not None:
        raise Conflict(f"model {model.id} is version {existing} of {name!r} already")
    last = session.scalar(
        select(func.max(ModelVersion.number)).where(
            ModelVersion.registered_model_id == registered.id
        )
    )
    version = ModelVersion(
        registered_model_id=registered.id,
        number=(last or 0) + 1,
        model_id=model.id,
        registered_by_key_id=key_id,
        registered_by_job_id=job_id,
    )
    session.add(version)
    session.flush()
    return version


def move_alias(
    session: Session, tenant_id: str, name: str, alias: str, version: int | None, key_id: str
) -> AliasMove | None:
    """Point `alias` of `name` at version number `version`, or delete it (`version` None).
    Every change of an alias goes through here and is kept as an `AliasMove`: the one place
    to announce a move from, in the transaction that makes it. None when nothing changed (the
    alias points at that version already). `404` for an unknown name, or an unknown alias to
    delete; `422` naming `version` for a version there is not, or whose model was deleted.
    The tenant's webhooks hear of it (`model.alias_moved`) in the same transaction."""
    registered = _locked(session, tenant_id, name)
    current = session.scalar(
        select(ModelAlias).where(
            ModelAlias.registered_model_id == registered.id, ModelAlias.alias == alias
        )
    )
    current_number = (
        None if current is None else session.get(ModelVersion, current.version_id).number
    )
    if version is None:
        if current is None:
            raise NotFound("alias", f"{name}@{alias}", by="name")
        session.delete(current)
    else:
        target = _live_version(session, registered, version)
        if current_number == version:
            return None
        if current is None:
            session.add(
                ModelAlias(registered_model_id=registered.id, alias=alias, version_id=target.id)
            )
        else:
            current.version_id, current.updated_at = target.id, utcnow()
    move = AliasMove(
        registered_model_id=registered.id,
        alias=alias,
        from_version=current_number,
        to_version=version,
        key_id=key_id,
    )
    session.add(move)
    session.flush()
    target_model = None if version is None else target.model_id
    webhooks.emit(
        session,
        tenant_id,
        "model.alias_moved",
        {
            "name": name,
            "alias": alias,
            "from_version": current_number,
            "to_version": version,  # null: the alias was deleted
            "model_id": target_model,
        },
    )
    return move


def _live_version(session: Session, registered: RegisteredModel, number: int) -> ModelVersion:
    """Version `number` of the registered model, its model's row locked (see the module's
    docstring); `422` naming `version` when there is none or its model was deleted."""
    target = session.scalar(
        select(ModelVersion).where(
            ModelVersion.registered_model_id == registered.id, ModelVersion.number == number
        )
    )
    if target is None:
        raise InvalidInput([SpecIssue("version", f"{registered.name!r} has no version {number}")])
    deleted_at = session.scalar(
        select(Model.deleted_at).where(Model.id == target.model_id).with_for_update()
    )
    if deleted_at is not None:
        message = f"version {number}'s model {target.model_id} was deleted"
        raise InvalidInput([SpecIssue("version", message)])
    return target


def _aliases(session: Session, registered_ids: list[str]) -> dict[str, list[AliasOut]]:
    """The aliases of each registered model, by alias."""
    rows = session.execute(
        select(ModelAlias, ModelVersion.number, ModelVersion.model_id)
        .join(ModelVersion, ModelVersion.id == ModelAlias.version_id)
        .where(ModelAlias.registered_model_id.in_(registered_ids))
        .order_by(ModelAlias.alias)
    ).all()
    found: dict[str, list[AliasOut]] = {id_: [] for id_ in registered_ids}
    for alias, number, model_id in rows:
        found[alias.registered_model_id].append(
            AliasOut(
                alias=alias.alias, version=number, model_id=model_id, updated_at=alias.updated_at
            )
        )
    return found


def version_out(
    name: str, version: ModelVersion, deleted: bool, aliases: list[str]
) -> ModelVersionOut:
    return ModelVersionOut(
        name=name,
        version=version.number,
        model_id=version.model_id,
        created_at=version.created_at,
        registered_by_key_id=version.registered_by_key_id,
        registered_by_job_id=version.registered_by_job_id,
        deleted=deleted,
        aliases=aliases,
    )


def alias_out(session: Session, tenant_id: str, name: str, alias: str) -> AliasOut:
    """An alias there is: what it points at."""
    registered = get_registered(session, tenant_id, name)
    (found,) = [a for a in _aliases(session, [registered.id])[registered.id] if a.alias == alias]
    return found


def summaries(session: Session, rows: list[RegisteredModel]) -> list[RegisteredModelOut]:
    """A page of registered models, in two queries whatever its size."""
    ids = [row.id for row in rows]
    latest = dict(
        session.execute(
            select(ModelVersion.registered_model_id, func.max(ModelVersion.number))
            .where(ModelVersion.registered_model_id.in_(ids))
            .group_by(ModelVersion.registered_model_id)
        ).all()
    )
    aliases = _aliases(session, ids)
    return [
        RegisteredModelOut(
            name=row.name,
            created_at=row.created_at,
            latest_version=latest[row.id],
            aliases=aliases[row.id],
        )
        for row in rows
    ]


def detail(session: Session, registered: RegisteredModel) -> RegisteredModelDetail:
    aliases = _aliases(session, [registered.id])[registered.id]
    pointing: dict[int, list[str]] = {}
    for alias in aliases:
        pointing.setdefault(alias.version, []).append(alias.alias)
    versions = [
        version_out(
            registered.name, version, deleted_at is not None, pointing.get(version.number, [])
        )
        for version, deleted_at in session.execute(
            select(ModelVersion, Model.deleted_at)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(ModelVersion.registered_model_id == registered.id)
            .order_by(ModelVersion.number)
        ).all()
    ]
    moves = session.scalars(
        select(AliasMove)
        .where(AliasMove.registered_model_id == registered.id)
        .order_by(AliasMove.id)
    )
    return RegisteredModelDetail(
        name=registered.name,
        created_at=registered.created_at,
        latest_version=versions[-1].version,
        aliases=aliases,
        versions=versions,
        alias_history=[
            AliasMoveOut(
                alias=m.alias,
                from_version=m.from_version,
                to_version=m.to_version,
                key_id=m.key_id,
                time=m.time,
            )
            for m in moves
        ],
    )
