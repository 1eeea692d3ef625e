from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from app.deps import CallerDep, SessionDep
from app.problems import InvalidInput
from app.schemas import (
    GenerateRequest,
    GenerateResponse,
    ModelOut,
    ModelUpdate,
    Page,
    PredictRequest,
    PredictResponse,
    TransferabilityOut,
    TransferabilityRequest,
)
from app.services import exports, generation, imports, models, transferability
from trainer.spec import SpecIssue, Text

router = APIRouter(prefix="/v1/models", tags=["models"])

# A model's `{model_id}` is any reference to it (`app.services.registry`): its id, `name@alias`
# or `name/versions/N`, whose slashes the path converter lets through, encoded as `%2F` or not.
# Starlette tries routes in order, so the routes of a model's sub-resources (`.../download`)
# come before those of the model itself, whose `{model_id:path}` would match them too.
ModelRef = Annotated[
    str,
    Path(description="The model's id, or a registered version: `name@alias`, `name/versions/N`."),
]


@router.get("")
def list_models(
    session: SessionDep,
    caller: CallerDep,
    parent_id: Annotated[str | None, Query(description="Only models made from this one.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    cursor: str | None = None,
) -> Page[ModelOut]:
    rows, next_cursor = models.list_models(session, caller.tenant_id, parent_id, limit, cursor)
    return Page(data=[models.to_out(session, m) for m in rows], next_cursor=next_cursor)


@router.post("/import", status_code=201)
def import_model(
    session: SessionDep,
    caller: CallerDep,
    file: Annotated[
        UploadFile | None, File(description="Weights as safetensors; never a pickle.")
    ] = None,
    hf_model: Annotated[
        Text | None,
        Form(description="Instead of a file: a Hugging Face model directory configured here."),
    ] = None,
    card: Annotated[
        Text | None,
        Form(
            description="JSON: architecture, params, task (features or a task head), "
            "input_shape, normalization, and the head's fields (labels, targets, "
            "target_scaling, thresholds, horizon)"
        ),
    ] = None,
    name: Annotated[Text | None, Form(max_length=200)] = None,
) -> ModelOut:
    """A model made elsewhere, for a registered architecture: usable as a `base_model_id`."""
    if (file is None) == (hf_model is None):
        problem = SpecIssue("file", "give exactly one of `file` or `hf_model`")
        raise InvalidInput([problem])
    if hf_model is not None:
        model = imports.import_hf_model(session, caller.tenant_id, hf_model, name)
    else:
        model = imports.import_model(
            session, caller.tenant_id, file.file, file.filename or "", card, name
        )
    return models.to_out(session, model)


@router.get(
    "/{model_id:path}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}, "application/zip": {}}}},
)
def download_model(
    model_id: ModelRef,
    session: SessionDep,
    caller: CallerDep,
    format: Literal["safetensors", "onnx", "archive", "hf"] = "safetensors",
) -> FileResponse:
    """`safetensors`: the weights, the JSON model card in the header. `onnx`: opset 18, any
    batch size, raw inputs in (normalisation inside), `probabilities` and `embeddings` out.
    `archive`: a zip of both, `model_card.json` and a `serve.py` that needs only onnxruntime.
    `hf` (`hf_encoder` models): a zipped Hugging Face directory for `AutoModel.from_pretrained`.
    `ETag` is the file's sha256; `Range` requests are served."""
    download = exports.download(models.get_model(session, caller.tenant_id, model_id), format)
    return FileResponse(
        download.path,
        media_type=download.media_type,
        filename=download.filename,
        headers={"ETag": f'"{download.sha256}"', "X-Content-SHA256": download.sha256},
    )


NPY = "application/x-npy"


@router.post(
    "/{model_id:path}/predict",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": PredictRequest.model_json_schema()},
                NPY: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def predict(
    model_id: ModelRef,
    request: Request,
    caller: CallerDep,
    return_embeddings: Annotated[bool, Query(description="With an npy body.")] = False,
) -> PredictResponse:
    """Predict on a batch: JSON `{"inputs": [...]}`, or for numeric models the batch as one
    `.npy` array (`Content-Type: application/x-npy`), which skips parsing JSON numbers."""
    body = await request.body()
    if request.headers.get("content-type", "").startswith(NPY):
        inputs = models.npy_inputs(body)
    else:
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as error:
            raise RequestValidationError(
                [{**e, "loc": ("body", *e["loc"])} for e in error.errors()]
            ) from None
        inputs, return_embeddings = parsed.inputs, parsed.return_embeddings
    return await models.predict_by_id(caller.tenant_id, model_id, inputs, return_embeddings)


@router.post(
    "/{model_id:path}/generate",
    response_model=GenerateResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def generate(
    model_id: ModelRef, body: GenerateRequest, caller: CallerDep
) -> GenerateResponse | EventSourceResponse:
    """Text from a `causal_lm` model: it continues `prompt`, or answers `messages` in its chat
    template. With `stream`, Server-Sent Events as the text is sampled: `text` events
    (`{"text": …}`, the next piece of the answer), then `end` (the answer as the JSON response
    has it: `text`, `finish_reason`, `usage`, `model`) before the server closes. A client that
    disconnects stops the generation. `409` for a model of another task; `422` naming `prompt`
    or `messages` when the prompt leaves the model no room to answer."""
    if (body.prompt is None) == (body.messages is None):
        raise InvalidInput([SpecIssue("prompt", "give exactly one of `prompt` or `messages`")])
    started = await generation.start(
        caller.tenant_id, model_id, body, prompt=body.prompt, messages=body.messages
    )
    if body.stream:
        return EventSourceResponse(generation.events(started), ping=15)
    return await generation.answer(started)


@router.post("/{model_id:path}/transferability")
async def score_transferability(
    model_id: ModelRef, body: TransferabilityRequest, caller: CallerDep
) -> TransferabilityOut:
    """How well the model would suit a labelled dataset as a base, before any training: LogME
    of its backbone's features (one forward pass over the training split, or the `fraction`
    of it a job of `seed` would train on). `422` naming `dataset` when it is unknown, has no
    labels, or holds inputs the model does not read."""
    return await transferability.score_model(caller.tenant_id, model_id, body)


@router.get("/{model_id:path}")
def get_model(model_id: ModelRef, session: SessionDep, caller: CallerDep) -> ModelOut:
    return models.to_out(session, models.get_model(session, caller.tenant_id, model_id))


@router.patch("/{model_id:path}")
def update_model(
    model_id: ModelRef, update: ModelUpdate, session: SessionDep, caller: CallerDep
) -> ModelOut:
    """Rename or re-tag a model (`tags` replaces the whole list)."""
    return models.to_out(session, models.update_model(session, caller.tenant_id, model_id, update))


@router.delete("/{model_id:path}", status_code=204)
def delete_model(model_id: ModelRef, session: SessionDep, caller: CallerDep) -> Response:
    """Delete a model's files; `409` while a queued or running job starts from it."""
    models.delete_model(session, caller.tenant_id, model_id)
    return Response(status_code=204)
