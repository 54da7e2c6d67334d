"""The generated alert rules: promtool checks, staleness, overrides."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stream import alerts
from stream.errors import SettingsError

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed; it comes with Debian's prometheus package"
            " (apt-get install prometheus), which .ci/install.sh installs"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_rule_files_pass_promtool_check() -> None:
    assert RULES, "no rule file under prometheus/rules"

    result = _run("check", "rules", *map(str, RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout


def test_rule_unit_tests_pass_promtool() -> None:
    assert RULE_TESTS, "no promtool test under prometheus/tests"

    result = _run("test", "rules", *map(str, RULE_TESTS))

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_committed_rules_are_what_the_catalogue_generates() -> None:
    committed = alerts.RULES_FILE.read_text(encoding="utf-8")

    assert committed == alerts.render(alerts.resolve()), (
        "prometheus/rules/crm-kpis.yml is stale: run `python -m stream.alerts`"
    )


def test_every_rule_has_a_firing_and_a_quiet_promtool_case() -> None:
    rules = yaml.safe_load(alerts.RULES_FILE.read_text(encoding="utf-8"))
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    firing: set[str] = set()
    quiet: set[str] = set()

    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            for case in test.get("alert_rule_test", []):
                target = firing if case.get("exp_alerts") else quiet
                target.add(case["alertname"])

    assert names == {
        "CrmFirstContactResolutionLow",
        "CrmEmailUnsubscribeHigh",
        "CrmEmailDeliverabilityLow",
        "CrmQuotaAttainmentLow",
        "CrmWorkerDown",
        "CrmKpiStateUnowned",
        "CrmConsumerLagGrowing",
        "CrmDeadLetters",
        "CrmWatermarkStalled",
    }
    assert names - firing == set(), "rules with no firing promtool case"
    assert names - quiet == set(), "rules with no quiet promtool case"


def test_rule_file_reads_back_as_the_rules() -> None:
    config = alerts.resolve()

    document = yaml.safe_load(alerts.render(config))

    assert document == {
        "groups": [
            {
                "name": "crm-kpis",
                "rules": [rule.as_mapping() for rule in alerts.kpi_rules(config)],
            },
            {
                "name": "crm-pipeline",
                "rules": [rule.as_mapping() for rule in alerts.pipeline_rules(config)],
            },
        ]
    }


def test_deliverability_rule_guards_on_volume() -> None:
    rules = {rule.alert: rule for rule in alerts.kpi_rules(alerts.resolve())}

    rule = rules["CrmEmailDeliverabilityLow"]

    assert rule.expr == (
        'max(crm_email_deliverability_ratio{window="24h"}) < 0.95\n'
        "and on ()\n"
        'max(crm_emails_sent{window="24h"}) >= 1000'
    )
    assert rule.hold == "15m"
    assert rule.labels == {
        "kpi": "email_deliverability",
        "severity": "critical",
        "window": "24h",
    }


def test_overrides_change_threshold_volume_and_hold() -> None:
    config = alerts.resolve(
        {
            "kpis": {
                "email_deliverability": {
                    "critical": 0.9,
                    "warning": 0.93,
                    "min_volume": 500,
                    "for": "30m",
                }
            },
            "pipeline": {"consumer_lag": 5000},
        }
    )

    rules = {rule.alert: rule for rule in alerts.kpi_rules(config)}
    pipeline = {rule.alert: rule for rule in alerts.pipeline_rules(config)}

    assert rules["CrmEmailDeliverabilityLow"].expr == (
        'max(crm_email_deliverability_ratio{window="24h"}) < 0.9\n'
        "and on ()\n"
        'max(crm_emails_sent{window="24h"}) >= 500'
    )
    assert rules["CrmEmailDeliverabilityLow"].hold == "30m"
    assert pipeline["CrmConsumerLagGrowing"].expr.startswith(
        "max by (topic, partition) (crm_consumer_lag) > 5000\n"
    )


def test_override_can_add_and_remove_alerts() -> None:
    config = alerts.resolve(
        {
            "kpis": {
                "quota_attainment": {"alert_window": None},
                "complaints": {
                    "direction": "above",
                    "warning": 10,
                    "critical": 50,
                    "alert_window": "day",
                },
            }
        }
    )

    rules = {rule.alert: rule for rule in alerts.kpi_rules(config)}

    assert "CrmQuotaAttainmentLow" not in rules
    assert rules["CrmComplaintsHigh"].expr == (
        'max(crm_complaints{window="day", category="all"}) > 50'
    )
    assert rules["CrmComplaintsHigh"].hold == "15m"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kpis": {"nps": {"critical": 1}}}, "unknown KPI 'nps'"),
        ({"thresholds": {}}, "unknown key 'thresholds'"),
        (
            {"kpis": {"email_deliverability": {"critical": "low"}}},
            "'kpis.email_deliverability.critical' must be a number",
        ),
        (
            {"kpis": {"email_deliverability": {"alert_window": "2h"}}},
            "'kpis.email_deliverability.alert_window' is '2h'",
        ),
        (
            {"kpis": {"email_deliverability": {"critical": 0.99}}},
            "warning 0.97 past critical 0.99",
        ),
        (
            {"kpis": {"complaints": {"critical": 5}}},
            "must give direction, warning",
        ),
        (
            {"kpis": {"email_deliverability": {"for": "soon"}}},
            "must be a Prometheus duration",
        ),
    ],
)
def test_bad_overrides_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match="alert overrides") as raised:
        alerts.resolve(overrides)

    assert message in str(raised.value)


def test_overrides_load_from_json_and_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "overrides.json"
    as_json.write_text(json.dumps({"kpis": {"email_open": {"critical": 0.05}}}))
    as_yaml = tmp_path / "overrides.yml"
    as_yaml.write_text("kpis:\n  email_open:\n    critical: 0.05\n")

    expected = {"kpis": {"email_open": {"critical": 0.05}}}
    assert alerts.load_overrides(as_json) == expected
    assert alerts.load_overrides(as_yaml) == expected


def test_overrides_that_are_not_a_mapping_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "overrides.yml"
    path.write_text("- email_open\n")

    with pytest.raises(SettingsError, match="must hold a mapping"):
        alerts.load_overrides(path)


def test_strings_yaml_would_misread_are_quoted(tmp_path: Path) -> None:
    summary = 'no: 10 # "quoted"'
    config = alerts.resolve({"kpis": {"email_deliverability": {"summary": "no"}}})
    tricky = alerts.resolve({"kpis": {"email_unsubscribe": {"summary": summary}}})

    plain = yaml.safe_load(alerts.render(config))["groups"][0]["rules"][2]
    quoted = yaml.safe_load(alerts.render(tricky))["groups"][0]["rules"][1]

    assert plain["annotations"]["summary"] == "no"
    assert quoted["annotations"]["summary"] == summary


def test_main_writes_a_rule_file_promtool_accepts(tmp_path: Path) -> None:
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"kpis": {"email_open": {"alert_window": "7d"}}}))
    output = tmp_path / "rules.yml"

    status = alerts.main(["--overrides", str(overrides), "--output", str(output)])
    result = _run("check", "rules", str(output))

    assert status == 0
    assert result.returncode == 0, result.stdout + result.stderr
