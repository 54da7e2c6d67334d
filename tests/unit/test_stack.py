"""Unit tests of the local stack's configuration rendering and bookkeeping."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml

from stream import stack
from stream.errors import StackError
from stream.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _properties(text: str) -> dict[str, str]:
    pairs = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def test_kafka_template_renders_a_single_loopback_kraft_node() -> None:
    template = (REPO / "stack" / "kafka" / "server.properties").read_text()

    text = stack.render_kafka_properties(template, 19092, 19093, Path("/s/kafka/data"))

    props = _properties(text)
    assert "$" not in text
    assert props["node.id"] == "1"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    )
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == "/s/kafka/data"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["num.partitions"] == "1"
    assert props["auto.create.topics.enable"] == "true"


def test_kafka_template_rejects_an_unfilled_placeholder() -> None:
    with pytest.raises(KeyError, match="other"):
        stack.render_kafka_properties("log.dirs=$log_dir\nx=$other\n", 1, 2, Path("/"))


def test_prometheus_template_renders_rules_target_files_and_intervals() -> None:
    template = (REPO / "prometheus" / "prometheus.local.yml").read_text()

    text = stack.render_prometheus_config(
        template,
        "/repo/prometheus/rules/*.yml",
        "/s/prometheus/rules/*.yml",
        "/s/prometheus/targets/*.json",
        "127.0.0.1:19090",
    )

    config = yaml.safe_load(text)
    assert config["global"]["scrape_interval"] == "2s"
    assert config["global"]["evaluation_interval"] == "2s"
    assert config["rule_files"] == [
        "/repo/prometheus/rules/*.yml",
        "/s/prometheus/rules/*.yml",
    ]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "static_configs" not in jobs["crm-kpi-stream"]
    assert jobs["crm-kpi-stream"]["file_sd_configs"] == [
        {"files": ["/s/prometheus/targets/*.json"], "refresh_interval": "2s"}
    ]
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:19090"]}]


def test_prometheus_template_quotes_paths_yaml_would_misread() -> None:
    template = (REPO / "prometheus" / "prometheus.local.yml").read_text()

    text = stack.render_prometheus_config(
        template, "/a: b/*.yml", "/#c/*.yml", '/"d"/*.json', "127.0.0.1:9090"
    )

    config = yaml.safe_load(text)
    assert config["rule_files"] == ["/a: b/*.yml", "/#c/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["crm-kpi-stream"]["file_sd_configs"][0]["files"] == ['/"d"/*.json']


def test_prometheus_targets_file_lists_every_worker_in_one_group() -> None:
    text = stack.render_prometheus_targets(["127.0.0.1:6066", "127.0.0.1:6067"])

    assert json.loads(text) == [
        {"targets": ["127.0.0.1:6066", "127.0.0.1:6067"], "labels": {}}
    ]


def test_prometheus_targets_file_holds_no_group_without_workers() -> None:
    assert json.loads(stack.render_prometheus_targets([])) == []


def test_stack_writes_the_worker_targets_where_the_config_looks(
    tmp_path: Path,
) -> None:
    settings = Settings(
        stack_dir=tmp_path / "s",
        prometheus_port=19090,
        prometheus_targets=["127.0.0.1:16066"],
    )
    layout = stack.Layout.of(settings)

    config_file = stack._write_prometheus_config(settings, layout)

    config = yaml.safe_load(config_file.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    [files] = [sd["files"] for sd in jobs["crm-kpi-stream"]["file_sd_configs"]]
    assert files == [str(tmp_path / "s" / "prometheus" / "targets" / "*.json")]
    assert config["rule_files"][1] == str(
        tmp_path / "s" / "prometheus" / "rules" / "*.yml"
    )
    assert layout.prometheus_rules.is_dir()
    assert sorted(p.name for p in layout.prometheus_targets.iterdir()) == [
        "workers.json"
    ]
    workers = layout.prometheus_targets / "workers.json"
    assert json.loads(workers.read_text()) == [
        {"targets": ["127.0.0.1:16066"], "labels": {}}
    ]


def test_redis_conf_binds_loopback_in_the_foreground_with_its_own_dir() -> None:
    text = stack.render_redis_conf(16379, Path("/s/redis/data"))

    directives = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            directives[name] = value
    assert directives["bind"] == "127.0.0.1"
    assert directives["port"] == "16379"
    assert directives["daemonize"] == "no"
    assert directives["dir"] == '"/s/redis/data"'
    assert directives["appendonly"] == "no"
    assert directives["save"] == "60 100"
    assert "{config-file}" in directives["proc-title-template"]


def test_cluster_id_is_sixteen_bytes_in_unpadded_urlsafe_base64() -> None:
    ids = {stack.new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_kafka_command_puts_heap_log4j2_and_classpath_before_the_main() -> None:
    command = stack.kafka_command(
        "/usr/bin/java",
        "-Xms256m -Xmx768m",
        Path("/c/kafka-4.0.2/libs"),
        Path("/s/kafka/server.properties"),
        Path("/s/kafka/logs"),
    )

    assert command[:3] == ["/usr/bin/java", "-Xms256m", "-Xmx768m"]
    assert command[-4:] == [
        "-cp",
        "/c/kafka-4.0.2/libs/*",
        "kafka.Kafka",
        "/s/kafka/server.properties",
    ]
    assert "-Dkafka.logs.dir=/s/kafka/logs" in command
    log4j = f"-Dlog4j2.configurationFile={REPO}/stack/kafka/log4j2.properties"
    assert log4j in command


def test_prometheus_command_listens_on_loopback_with_reload_enabled() -> None:
    command = stack.prometheus_command(
        "/usr/bin/prometheus", 19090, Path("/s/p/prometheus.yml"), Path("/s/p/data")
    )

    assert command == [
        "/usr/bin/prometheus",
        "--config.file=/s/p/prometheus.yml",
        "--storage.tsdb.path=/s/p/data",
        "--storage.tsdb.retention.time=2d",
        "--web.listen-address=127.0.0.1:19090",
        "--web.enable-lifecycle",
    ]


@pytest.mark.parametrize(
    ("jars", "complete"),
    [
        (
            [
                "kafka_2.13-4.0.2.jar",
                "log4j-core-2.24.3.jar",
                "log4j-slf4j2-impl-2.24.3.jar",
                "slf4j-api-2.0.16.jar",
            ],
            True,
        ),
        (
            ["kafka_2.13-4.0.2.jar", "log4j-core-2.24.3.jar", "slf4j-api-2.0.16.jar"],
            False,
        ),
        (
            [
                "kafka_2.13-4.0.1.jar",
                "log4j-core-2.24.3.jar",
                "log4j-slf4j2-impl-2.24.3.jar",
                "slf4j-api-2.0.16.jar",
            ],
            False,
        ),
        (
            [
                "kafka_2.13-4.0.2.jar",
                "log4j-core-2.24.3.jar",
                "log4j-slf4j2-impl-2.24.3.jar",
                "slf4j-api-1.7.36.jar",
            ],
            False,
        ),
    ],
)
def test_kafka_jars_are_complete_only_with_broker_and_log4j2_binding(
    tmp_path: Path, jars: list[str], complete: bool
) -> None:
    for name in jars:
        (tmp_path / name).write_bytes(b"")

    assert stack.kafka_jars_complete(tmp_path, "4.0.2") is complete


def test_kafka_jars_are_incomplete_when_the_directory_is_missing(
    tmp_path: Path,
) -> None:
    assert stack.kafka_jars_complete(tmp_path / "absent", "4.0.2") is False


def test_layout_places_files_per_service_and_jars_per_version(tmp_path: Path) -> None:
    settings = Settings(
        stack_dir=tmp_path / "s", stack_cache_dir=tmp_path / "c", kafka_version="4.0.2"
    )

    layout = stack.Layout.of(settings)

    assert layout.kafka_libs == tmp_path / "c" / "kafka-4.0.2" / "libs"
    assert layout.maven_repo == tmp_path / "c" / "m2"
    assert layout.pid_file("redis") == tmp_path / "s" / "redis" / "redis.pid"
    assert layout.log_file("kafka") == tmp_path / "s" / "kafka" / "kafka.log"
    assert layout.config_file("prometheus") == (
        tmp_path / "s" / "prometheus" / "prometheus.yml"
    )
    assert layout.data_dir("kafka") == tmp_path / "s" / "kafka" / "data"


def test_fetch_refuses_a_kafka_older_than_4(tmp_path: Path) -> None:
    settings = Settings(stack_cache_dir=tmp_path, kafka_version="3.9.0")

    with pytest.raises(StackError, match=re.escape("CRM_KAFKA_VERSION='3.9.0'")):
        stack.fetch(settings)


@pytest.mark.parametrize(
    ("pid", "healthy", "state"),
    [
        (10, True, "up"),
        (10, False, "starting"),
        (None, True, "foreign"),
        (None, False, "down"),
    ],
)
def test_service_state_follows_own_process_and_answer(
    pid: int | None, healthy: bool, state: str
) -> None:
    status = stack.ServiceStatus("redis", "127.0.0.1:6379", pid, healthy, "", Path())

    assert status.state == state


def test_stack_is_healthy_only_when_every_service_is_up() -> None:
    up = stack.ServiceStatus("kafka", "a", 1, True, "", Path())
    down = stack.ServiceStatus("redis", "b", None, False, "", Path())

    assert stack.StackStatus((up,)).healthy is True
    assert stack.StackStatus((up, down)).healthy is False
    assert stack.StackStatus((down,)).stopped is True
    assert stack.StackStatus((up, down)).service("redis") is down


def test_stack_status_names_the_services_when_asked_for_an_unknown_one() -> None:
    with pytest.raises(StackError, match="use one of"):
        stack.StackStatus(()).service("zookeeper")


def test_restart_refuses_an_unknown_service() -> None:
    with pytest.raises(StackError, match="no service 'zookeeper'"):
        stack.restart_service(Settings(), "zookeeper")
