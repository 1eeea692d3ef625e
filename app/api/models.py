from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from app.deps import SessionDep
from app.schemas import ModelOut, Page, PredictRequest, PredictResponse
from app.services import models

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
def list_models(
    session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 20, cursor: str | None = None
) -> Page[ModelOut]:
    rows, next_cursor = models.list_models(session, limit, cursor)
    return Page(data=[models.to_out(m) for m in rows], next_cursor=next_cursor)


@router.get("/{model_id}")
def get_model(model_id: str, session: SessionDep) -> ModelOut:
    return models.to_out(models.get_model(session, model_id))


@router.get(
    "/{model_id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def download_model(
    model_id: str, session: SessionDep, format: Literal["safetensors"] = "safetensors"
) -> FileResponse:
    """The weights as safetensors; the JSON model card is in the file's header metadata."""
    model = models.get_model(session, model_id)
    return FileResponse(
        models.model_file(model),
        media_type="application/octet-stream",
        filename=f"{model.id}.{format}",
        headers={"ETag": f'"{model.sha256}"', "X-Content-SHA256": model.sha256},
    )


@router.post("/{model_id}/predict")
def predict(model_id: str, request: PredictRequest, session: SessionDep) -> PredictResponse:
    model = models.get_model(session, model_id)
    return models.predict(model, request.inputs, request.return_embeddings)
