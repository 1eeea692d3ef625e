"""The `tunery` command."""

from app.cli import cli


def main() -> None:
    cli()
