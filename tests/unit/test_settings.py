"""Checks of the settings class on values it must refuse or keep."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from stream.errors import SettingsError
from stream.settings import Settings


def test_rates_in_another_reporting_currency_are_kept() -> None:
    settings = Settings(
        _env_file=None,
        reporting_currency="USD",
        rates={"USD": "1", "EUR": "1.087", "GBP": "1.27"},
    )

    assert settings.rates == {
        "USD": Decimal("1"),
        "EUR": Decimal("1.087"),
        "GBP": Decimal("1.27"),
    }


def test_a_rate_table_without_the_reporting_currency_is_refused() -> None:
    message = (
        "CRM_RATES lacks the reporting currency EUR (CRM_REPORTING_CURRENCY);"
        ' add "EUR": "1"'
    )

    with pytest.raises(SettingsError, match=f"^{re.escape(message)}$"):
        Settings(_env_file=None, rates={"USD": "0.92"})


def test_the_reporting_currency_must_be_at_rate_one() -> None:
    # The default table is in EUR: reporting in USD with it would count every
    # USD amount at 0.92 of itself.
    message = (
        "CRM_RATES gives the reporting currency USD (CRM_REPORTING_CURRENCY) the"
        " rate 0.92; it must be 1, with the other rates in units of USD"
    )

    with pytest.raises(SettingsError, match=f"^{re.escape(message)}$"):
        Settings(_env_file=None, reporting_currency="USD")


def test_zero_and_negative_rates_are_refused() -> None:
    message = (
        "CRM_RATES has rates that are not positive (GBP=-1.17, USD=0); give each"
        ' currency the units of EUR that one unit of it is worth, such as "0.92"'
    )

    with pytest.raises(SettingsError, match=f"^{re.escape(message)}$"):
        Settings(_env_file=None, rates={"EUR": "1", "USD": "0", "GBP": "-1.17"})


def test_rates_from_the_environment_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CRM_REPORTING_CURRENCY", raising=False)
    monkeypatch.setenv("CRM_RATES", '{"EUR": "1.01", "USD": "0.92"}')

    with pytest.raises(SettingsError, match=r"the rate 1\.01; it must be 1"):
        Settings(_env_file=None)
