"""The compose file and Dockerfile describe the production layout (no Docker engine here:
`docker compose config` validates the file by hand; these tests pin what it must contain)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_postgres_redis_a_one_shot_migration_the_api_and_a_gpu_worker():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "api", "worker"}
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        waits_for = services[name]["depends_on"]["migrate"]["condition"]
        assert waits_for == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["TUNERY_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["TUNERY_BROKER_URL"].startswith("redis://")
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    assert "--appendonly" in services["redis"]["command"]


def test_compose_postgres_takes_the_connections_of_every_api_process():
    from app.db import POSTGRES_MAX_OVERFLOW, POSTGRES_POOL_SIZE

    services = compose()["services"]
    api = services["api"]["command"]
    processes = int(api[api.index("--workers") + 1]) if "--workers" in api else 1
    postgres = services["postgres"]["command"]
    max_connections = int(postgres[postgres.index("-c") + 1].removeprefix("max_connections="))
    # Two pools a process (the sync sessions and the async job reads), each full at once.
    api_connections = processes * 2 * (POSTGRES_POOL_SIZE + POSTGRES_MAX_OVERFLOW)
    # The rest for the worker, the migration and an operator's psql.
    assert api_connections + 50 <= max_connections


def test_dockerfile_is_multi_stage_and_runs_as_a_non_root_user():
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any("COPY --from=build" in line for line in lines)
