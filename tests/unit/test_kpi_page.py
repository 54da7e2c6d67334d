"""The KPI reference page: generated from the catalogue, with edge-case notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream import kpi_page
from stream.catalogue import CATALOGUE, KPIS
from stream.kpi_page import EDGE_CASES, KPI_PAGE, main, render_kpi_page


def section(page: str, kpi_id: str) -> str:
    """Return the part of the page from a KPI's heading to the next one."""
    start = page.index(f"\n## {kpi_id}\n")
    end = page.find("\n## ", start + 1)
    return page[start : end if end != -1 else len(page)]


def test_committed_kpi_page_is_what_the_catalogue_generates() -> None:
    committed = KPI_PAGE.read_text(encoding="utf-8")

    assert committed == render_kpi_page(), (
        "docs/kpis.md is stale: run `python -m stream.kpi_page`"
    )


def test_every_kpi_has_a_section_naming_each_of_its_metrics() -> None:
    page = render_kpi_page()

    headings = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert headings == [kpi.id for kpi in CATALOGUE]
    for kpi in CATALOGUE:
        text = section(page, kpi.id)
        for series in kpi.series:
            assert f"| `{series.metric}` |" in text, (kpi.id, series.metric)


def test_edge_case_notes_cover_exactly_the_catalogue() -> None:
    assert set(EDGE_CASES) == set(KPIS)
    for notes in EDGE_CASES.values():
        assert notes and all(note.endswith(".") for note in notes)


def test_a_kpi_without_notes_cannot_be_rendered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    notes = {k: v for k, v in EDGE_CASES.items() if k != "margin"}
    monkeypatch.setattr(kpi_page, "EDGE_CASES", notes)

    with pytest.raises(ValueError, match=r"missing \['margin'\]"):
        render_kpi_page()


def test_a_threshold_with_an_alert_reads_as_written_by_hand() -> None:
    text = section(render_kpi_page(), "email_deliverability")

    assert (
        "Threshold: low values are bad; below 0.97 (97 %) is a warning, below 0.95"
        " (95 %) critical. An alert (prometheus/rules/) fires while the `24h` value"
        " stays below 0.95 (95 %) and `crm_emails_sent` is at least 1000: Email"
        " deliverability is low."
    ) in text


def test_a_dimensioned_kpi_lists_its_values_after_all() -> None:
    text = section(render_kpi_page(), "complaints")

    assert (
        "Dimension `category`: `all` (every value together), `product`, `service`,"
        " `billing`, `delivery`, `other`."
    ) in text
    assert "Labels: `window`, `category`." in text


def test_a_money_kpi_names_the_currency_label() -> None:
    text = section(render_kpi_page(), "margin")

    assert "Labels: `window`, `currency` (money series)." in text
    assert (
        "| `margin` (headline) | `crm_margin` | money | `1h`, `24h`, `7d`, `30d`,"
        " `day`, `month`, `last_month` | Order revenue minus cost. |"
    ) in text


def test_the_command_writes_the_page(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "kpis.md"

    assert main([str(target)]) == 0
    assert target.read_text(encoding="utf-8") == render_kpi_page()
