from fastapi import APIRouter

from app.schemas import SpecCatalog
from app.services import spec_catalog

router = APIRouter(prefix="/v1/spec-catalog", tags=["jobs"])


@router.get("")
def get_spec_catalog() -> SpecCatalog:
    """Each architecture (`model.architecture`) and method (`method.name`, by job kind) with the
    JSON Schema of its `params`, and the built-in datasets: what the job spec's own schema
    leaves open. The same for every tenant."""
    return spec_catalog.spec_catalog()
