"""The generated reference pages: the settings page and what it is made of."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream.docs import DEFAULT_DIRECTORY, render_settings_doc, write_docs
from stream.settings import Settings


class Sample(BaseSettings):
    """Settings of every kind the page describes."""

    model_config = SettingsConfigDict(env_prefix="DOC_")

    host: str = Field("localhost", description="Host to reach.")
    retries: int = Field(3, ge=0, le=10, description="Retries before giving up.")
    share: float = Field(0.5, gt=0, description="Share kept.")
    wait_seconds: float = Field(30.0, description="How long to wait.")
    enabled: bool = Field(False, description="Turn it on.")
    mode: Literal["fast", "safe"] = Field("safe", description="How to run.")
    token: SecretStr | None = Field(None, description="A token | a secret.")
    weights: dict[str, Decimal] = Field(
        default_factory=lambda: {"a": Decimal("1.50")}, description="Weights."
    )
    peers: list[str] = Field(default_factory=list, description="Peers to call.")
    folder: Path = Field(Path("var/data"), description="Where data goes.")
    code: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="A code.")
    suffix: str = Field("", description="Nothing by default.")


def table_rows(page: str) -> list[str]:
    """Return the rows of the page's table, without its header."""
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    return rows


def test_each_kind_of_setting_reads_as_written_in_the_environment() -> None:
    assert table_rows(render_settings_doc(Sample)) == [
        "| `DOC_HOST` | text | `localhost` | Host to reach. |",
        "| `DOC_RETRIES` | integer ≥ 0 and ≤ 10 | `3` | Retries before giving up. |",
        "| `DOC_SHARE` | number > 0 | `0.5` | Share kept. |",
        "| `DOC_WAIT_SECONDS` | number | `30` | How long to wait. |",
        "| `DOC_ENABLED` | boolean | `false` | Turn it on. |",
        "| `DOC_MODE` | one of `fast`, `safe` | `safe` | How to run. |",
        "| `DOC_TOKEN` | secret text, optional | unset | A token \\| a secret. |",
        '| `DOC_WEIGHTS` | JSON object of decimals | `{"a": "1.50"}` | Weights. |',
        "| `DOC_PEERS` | JSON array of strings | `[]` | Peers to call. |",
        "| `DOC_FOLDER` | path | `var/data` | Where data goes. |",
        "| `DOC_CODE` | text matching `^[A-Z]{3}$` | `EUR` | A code. |",
        '| `DOC_SUFFIX` | text | `""` | Nothing by default. |',
    ]


def test_a_setting_of_an_unknown_type_is_an_error() -> None:
    class Odd(BaseSettings):
        when: complex = Field(1j, description="A complex number.")

    with pytest.raises(TypeError, match="complex"):
        render_settings_doc(Odd)


def test_committed_settings_page_is_what_the_settings_class_generates() -> None:
    committed = (DEFAULT_DIRECTORY / "settings.md").read_text(encoding="utf-8")

    assert committed == render_settings_doc(), (
        "docs/settings.md is stale: run `crm-kpi docs` (or `python -m stream.docs`)"
    )


def test_every_setting_has_one_row_named_by_its_variable() -> None:
    rows = table_rows(render_settings_doc())

    variables = [row.split("`")[1] for row in rows]
    assert variables == [f"CRM_{name.upper()}" for name in Settings.model_fields]


def test_the_page_does_not_depend_on_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = render_settings_doc()
    monkeypatch.setenv("CRM_KAFKA_BOOTSTRAP", "elsewhere:19092")
    monkeypatch.setenv("CRM_RATES", '{"EUR": "1"}')

    assert render_settings_doc() == before
    assert "elsewhere" not in before


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_every_setting_is_described_in_a_full_sentence(name: str) -> None:
    description = Settings.model_fields[name].description or ""

    assert description[:1].isupper(), f"{name}: {description!r}"
    assert description.endswith("."), f"{name}: {description!r}"
    assert description == " ".join(description.split()), f"{name}: {description!r}"
    assert len(description.split()) >= 3, f"{name}: {description!r}"


def test_writing_the_docs_gives_the_rendered_page(tmp_path: Path) -> None:
    written = write_docs(tmp_path / "docs")

    assert written == [tmp_path / "docs" / "settings.md"]
    assert written[0].read_text(encoding="utf-8") == render_settings_doc()
