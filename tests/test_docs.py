"""Reference documentation generated from the code stays in step with it."""

from pathlib import Path

from app.spec_reference import reference


def test_the_spec_reference_lists_every_field_the_api_accepts():
    written = Path("docs/SPECS.md").read_text()
    assert written == reference(), "stale: run `python -m app.spec_reference > docs/SPECS.md`"
    for field in ("lora_rank", "discriminator_hidden", "per_class", "early_stopping_patience"):
        assert f"| `{field}` |" in written
