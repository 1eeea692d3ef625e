from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.deps import CallerDep, SessionDep
from app.problems import NotFound
from app.schemas import (
    AliasOut,
    AliasUpdate,
    ModelVersionOut,
    Page,
    RegisteredModelDetail,
    RegisteredModelOut,
    RegisterVersion,
)
from app.services import models, registry
from trainer.spec import SLUG

router = APIRouter(prefix="/v1/registered-models", tags=["registered models"])

Name = Annotated[str, Path(pattern=f"^{SLUG}$", description="The registered model's name.")]
Alias = Annotated[str, Path(pattern=f"^{SLUG}$", description="e.g. `production`.")]


@router.get("")
def list_registered_models(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    cursor: str | None = None,
) -> Page[RegisteredModelOut]:
    rows, next_cursor = registry.list_registered(session, caller.tenant_id, limit, cursor)
    return Page(data=registry.summaries(session, rows), next_cursor=next_cursor)


@router.get("/{name}")
def get_registered_model(
    name: Name, session: SessionDep, caller: CallerDep
) -> RegisteredModelDetail:
    """Its versions, its aliases and every move of an alias."""
    return registry.detail(session, registry.get_registered(session, caller.tenant_id, name))


REGISTERED_MODEL = "#/paths/~1v1~1registered-models~1{name}"
ALIAS = "#/paths/~1v1~1registered-models~1{name}~1aliases~1{alias}"


@router.post(
    "/{name}/versions",
    status_code=201,
    # OpenAPI links: where a new version leads (clients that read them, and schemathesis'
    # stateful tests, follow them with the values of the response).
    responses={
        201: {
            "links": {
                "GetRegisteredModel": {
                    "operationRef": f"{REGISTERED_MODEL}/get",
                    "parameters": {"name": "$response.body#/name"},
                },
                "SetAlias": {
                    "operationRef": f"{ALIAS}/put",
                    "parameters": {"name": "$response.body#/name"},
                    "requestBody": {"version": "$response.body#/version"},
                },
            }
        }
    },
)
def register_version(
    name: Name, body: RegisterVersion, session: SessionDep, caller: CallerDep
) -> ModelVersionOut:
    """Make a model of the tenant's the name's next version; the first makes the name. `404`
    for an unknown model, `409` for a model that is a version of this name already."""
    model = registry.find_model(session, caller.tenant_id, body.model_id)
    if model is None:
        raise NotFound("model", body.model_id)
    version = registry.register(session, caller.tenant_id, name, model, key_id=caller.key_id)
    return registry.version_out(name, version, deleted=False, aliases=[])


@router.put(
    "/{name}/aliases/{alias}",
    responses={
        200: {
            "links": {
                "DeleteAlias": {
                    "operationRef": f"{ALIAS}/delete",
                    "parameters": {"name": "$request.path.name", "alias": "$request.path.alias"},
                }
            }
        }
    },
)
def set_alias(
    name: Name, alias: Alias, body: AliasUpdate, session: SessionDep, caller: CallerDep
) -> AliasOut:
    """Point the alias at a version, making the alias or moving it; `422` naming `version`
    for a version the name does not have, or one whose model was deleted."""
    registry.move_alias(session, caller.tenant_id, name, alias, body.version, caller.key_id)
    models.forget_served(caller.tenant_id, f"{name}@{alias}")
    return registry.alias_out(session, caller.tenant_id, name, alias)


@router.delete("/{name}/aliases/{alias}", status_code=204)
def delete_alias(name: Name, alias: Alias, session: SessionDep, caller: CallerDep) -> Response:
    registry.move_alias(session, caller.tenant_id, name, alias, None, caller.key_id)
    models.forget_served(caller.tenant_id, f"{name}@{alias}")
    return Response(status_code=204)
