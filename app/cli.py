"""`tunery admin ...`: tenants and API keys. It talks to the database named by
`TUNERY_DATABASE_URL` directly, so it runs where the server runs. (The rest of the `tunery`
command is `tunery.cli`, an API client.)"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

admin = typer.Typer(no_args_is_help=True, help="Tenants and API keys (needs the database).")

Quota = Annotated[int | None, typer.Option(min=0, help="Unset: the server's default.")]


@contextmanager
def _tenants_session() -> Iterator["Session"]:
    """A database session; a tenant error ends the command with its message. The database
    stack is imported here, not at the top, so that `tunery jobs ...` starts without it."""
    from app.db import session_scope
    from app.services.tenants import TenantError

    try:
        with session_scope() as session:
            yield session
    except TenantError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


@admin.command("create-tenant")
def create_tenant(
    name: str,
    max_running_jobs: Quota = None,
    max_queued_jobs: Quota = None,
    max_storage_bytes: Quota = None,
    requests_per_minute: Quota = None,
) -> None:
    """Create a tenant: the owner of jobs, datasets and models, with its own quotas."""
    from app.services import tenants

    with _tenants_session() as session:
        tenant = tenants.create_tenant(
            session,
            name,
            max_running_jobs=max_running_jobs,
            max_queued_jobs=max_queued_jobs,
            max_storage_bytes=max_storage_bytes,
            requests_per_minute=requests_per_minute,
        )
        typer.echo(f"created tenant {tenant.name} ({tenant.id})")


@admin.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Option(help="The tenant's name.")],
    name: Annotated[str | None, typer.Option(help="What the key is for.")] = None,
    read_only: Annotated[bool, typer.Option(help="May read and predict, not change.")] = False,
) -> None:
    """Create an API key. The key is the last line of output; it is not shown again."""
    from app.services import tenants

    with _tenants_session() as session:
        key, secret = tenants.create_key(session, tenant, name, read_only)
        mode = "read-only" if read_only else "read-write"
        typer.echo(f"created {mode} key {key.id} for tenant {tenant}")
    typer.echo(secret)


@admin.command("revoke-key")
def revoke_key(key_id: str) -> None:
    """Revoke a key by its id (`key_...`); servers refuse it within `auth_cache_seconds`."""
    from app.services import tenants

    with _tenants_session() as session:
        tenants.revoke_key(session, key_id)
    typer.echo(f"revoked {key_id}")


@admin.command("list-keys")
def list_keys(tenant: Annotated[str, typer.Option(help="The tenant's name.")]) -> None:
    """A tenant's keys: id, mode, state and name (never the secret, which is not stored)."""
    from app.services import tenants

    with _tenants_session() as session:
        for key in tenants.list_keys(session, tenant):
            state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
            mode = "read-only" if key.read_only else "read-write"
            typer.echo(f"{key.id}\t{mode}\t{state}\t{key.name or ''}")


@admin.command("dev-key")
def dev_key(path: Annotated[Path, typer.Argument()] = Path("var/dev-api-key")) -> None:
    """The development tenant's key, kept in PATH: reused while valid, else created."""
    from app.services import tenants

    with _tenants_session() as session:
        secret = tenants.dev_key(session, path)
    typer.echo(f"development API key (in {path}):")
    typer.echo(secret)
