"""Settings from environment variables prefixed `TUNERY_`; the defaults are the embedded setup."""

from functools import cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.core.spec import MAX_RUNTIME_SECONDS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNERY_")

    database_url: str = "sqlite:///var/tunery.db"
    # kombu's SQLAlchemy transport on SQLite: a broker with no server to install. It is a
    # wake-up signal only; the sweep below re-sends what it loses.
    broker_url: str = "sqla+sqlite:///var/broker.db"
    artifact_dir: Path = Path("var/artifacts")
    # Per-attempt scratch directories for trainers, removed when the attempt ends.
    run_dir: Path = Path("var/runs")
    queue: str = "training"

    max_attempts: int = 3
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 1.0
    stop_grace_seconds: float = 10.0
    # The sweep re-queues jobs whose lease expired and re-sends queued jobs whose message may
    # be lost. 0 turns it off (for API-only test processes).
    sweep_interval_seconds: float = 10.0
    redispatch_after_seconds: float = 300.0
    # Longer than any job may run, so the broker never redelivers a message while its job runs.
    broker_visibility_timeout_seconds: int = MAX_RUNTIME_SECONDS + 6 * 3600


@cache
def get_settings() -> Settings:
    return Settings()
