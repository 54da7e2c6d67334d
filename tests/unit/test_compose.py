"""docker-compose.yml and the Prometheus config it mounts, checked without Docker."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    )
    return data


def _bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Return the service's bind mounts: container path by repository path."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_compose_file_is_valid_for_docker_compose() -> None:
    docker_compose = shutil.which("docker-compose")
    assert docker_compose is not None, (
        "docker-compose is not installed; it comes with Debian's docker-compose"
        " package, which .ci/install.sh installs"
    )

    result = subprocess.run(
        [docker_compose, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_the_whole_system() -> None:
    services = _compose()["services"]

    assert sorted(services) == [
        "grafana",
        "kafka",
        "prometheus",
        "redis",
        "simulator",
        "worker",
    ]
    assert services["kafka"]["image"] == "apache/kafka:4.0.0"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == (
        "broker,controller"
    )
    assert services["simulator"]["command"] == [
        "simulate",
        "--live",
        "--rate",
        "200",
        "--events",
        "0",
    ]
    assert services["worker"]["command"] == ["worker"]


def test_every_mounted_path_exists_in_the_repository() -> None:
    for name, service in _compose()["services"].items():
        for source in _bind_mounts(service).values():
            assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        if "build" in service:
            assert (ROOT / service["build"] / "Dockerfile").is_file(), name


def test_worker_environment_names_real_settings() -> None:
    services = _compose()["services"]
    kafka = services["kafka"]["environment"]

    for name in ("worker", "simulator"):
        environment = services[name]["environment"]
        for key in environment:
            assert key.startswith("CRM_"), f"{name}: {key}"
            field = key.removeprefix("CRM_").lower()
            assert field in Settings.model_fields, f"{name}: no setting for {key}"
        assert environment["CRM_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert services["worker"]["environment"]["CRM_WEB_HOST"] == "0.0.0.0"
    assert services["worker"]["environment"]["CRM_REDIS_URL"] == (
        "redis://redis:6379/0"
    )


def test_prometheus_loads_the_rules_and_scrapes_the_worker() -> None:
    services = _compose()["services"]
    mounts = _bind_mounts(services["prometheus"])
    config = yaml.safe_load(
        (ROOT / "prometheus" / "prometheus.yml").read_text(encoding="utf-8")
    )

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [
        target
        for static in jobs["crm-kpi-stream"]["static_configs"]
        for target in static["targets"]
    ]
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./prometheus/rules"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert targets == ["worker:6066"]
    assert services["worker"]["environment"]["CRM_WEB_PORT"] == "6066"


def test_grafana_is_provisioned_from_the_repository() -> None:
    mounts = _bind_mounts(_compose()["services"]["grafana"])
    provider = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text(
            encoding="utf-8"
        )
    )["providers"][0]

    assert mounts == {
        "/etc/grafana/provisioning": "./grafana/provisioning",
        "/var/lib/grafana/dashboards": "./grafana/dashboards",
    }
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed (Debian's prometheus)"

    result = subprocess.run(
        [promtool, "check", "config", "prometheus/prometheus.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
