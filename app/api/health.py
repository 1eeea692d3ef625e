from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.broker import celery_app
from app.db import get_engine
from app.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", responses={503: {"model": Readiness}})
def readyz() -> Readiness:
    """Ready when the database and the broker both answer."""
    checks = {}
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as error:
        checks["broker"] = f"unreachable: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    if ready:
        return body
    return JSONResponse(body.model_dump(), status_code=503)
