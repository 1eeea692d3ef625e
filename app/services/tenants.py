"""Tenants, their API keys and their quotas."""

from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import get_settings
from app.models import ApiKey, Dataset, Job, Model, Tenant, new_id, utcnow
from app.problems import Forbidden, TooManyRequests
from app.services import auth

QUOTAS = ("max_running_jobs", "max_queued_jobs", "max_storage_bytes", "requests_per_minute")


class TenantError(ValueError):
    """An admin request that cannot be done, in words for the operator."""


def quota(tenant: Tenant, name: str) -> int:
    """The tenant's own limit, or the server's default (`TUNERY_TENANT_<NAME>`)."""
    own = getattr(tenant, name)
    return own if own is not None else getattr(get_settings(), f"tenant_{name}")


def create_tenant(session: Session, name: str, **quotas: int | None) -> Tenant:
    if session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None:
        raise TenantError(f"a tenant named {name!r} exists already")
    tenant = Tenant(id=new_id("tenant"), name=name, **quotas)
    session.add(tenant)
    session.flush()
    return tenant


def tenant_named(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise TenantError(f"no tenant named {name!r}")
    return tenant


def create_key(
    session: Session, tenant_name: str, name: str | None = None, read_only: bool = False
) -> tuple[ApiKey, str]:
    """A new key and its secret, which is not stored and cannot be shown again."""
    tenant = tenant_named(session, tenant_name)
    secret = auth.new_secret()
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant.id,
        secret_sha256=auth.secret_sha256(secret),
        name=name,
        read_only=read_only,
    )
    session.add(key)
    session.flush()
    return key, secret


def revoke_key(session: Session, key_id: str) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None:
        raise TenantError(f"no key {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def list_keys(session: Session, tenant_name: str) -> list[ApiKey]:
    tenant = tenant_named(session, tenant_name)
    return list(
        session.scalars(
            select(ApiKey).where(ApiKey.tenant_id == tenant.id).order_by(ApiKey.created_at)
        )
    )


def dev_key(session: Session, path: Path) -> str:
    """The development tenant's key kept at `path`: reused while valid, else made anew."""
    if path.exists():
        secret = path.read_text().strip()
        if auth.authenticate(secret) is not None:
            return secret
    if session.scalar(select(Tenant.id).where(Tenant.name == "dev")) is None:
        create_tenant(session, "dev")
    _key, secret = create_key(session, "dev", name="make run")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def _locked_tenant(session: Session, tenant_id: str) -> Tenant:
    """The tenant row, locked until commit: concurrent submissions are counted one at a time."""
    return session.execute(
        select(Tenant).where(Tenant.id == tenant_id).with_for_update()
    ).scalar_one()


def check_job_quota(session: Session, tenant_id: str) -> None:
    """Refuse a submission past the tenant's queued-jobs quota, before anything is queued."""
    tenant = _locked_tenant(session, tenant_id)
    limit = quota(tenant, "max_queued_jobs")
    queued = session.scalar(
        select(func.count()).where(Job.tenant_id == tenant_id, Job.status == "queued")
    )
    if queued >= limit:
        raise TooManyRequests(
            f"quota: {queued} of at most {limit} jobs are queued; submit again when some start",
            retry_after_seconds=30,
        )


def storage_used(session: Session, tenant_id: str) -> int:
    datasets = session.scalar(
        select(func.coalesce(func.sum(Dataset.size_bytes), 0)).where(Dataset.tenant_id == tenant_id)
    )
    models = session.scalar(
        select(func.coalesce(func.sum(Model.size_bytes), 0)).where(
            Model.tenant_id == tenant_id, Model.deleted_at.is_(None)
        )
    )
    return int(datasets) + int(models)


def check_storage_quota(session: Session, tenant_id: str, adding_bytes: int, field: str) -> None:
    """Refuse what would take the tenant past its storage quota (waiting does not help: 403)."""
    tenant = _locked_tenant(session, tenant_id)
    limit = quota(tenant, "max_storage_bytes")
    used = storage_used(session, tenant_id)
    if used + adding_bytes > limit:
        raise Forbidden(
            f"quota: storing {adding_bytes} more bytes would exceed the {limit}-byte storage "
            f"quota ({used} used); delete datasets or models first",
            field,
        )
