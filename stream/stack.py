"""The local stack: Kafka, Redis and Prometheus run by hand on loopback."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Literal, get_args

import redis
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from redis.backoff import NoBackoff
from redis.retry import Retry

from stream.errors import StackError
from stream.settings import Settings

logger = logging.getLogger(__name__)

ServiceName = Literal["kafka", "redis", "prometheus"]
SERVICES: tuple[ServiceName, ...] = get_args(ServiceName)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
POM_FILE = PROJECT_ROOT / "stack" / "pom.xml"
KAFKA_TEMPLATE = PROJECT_ROOT / "stack" / "kafka" / "server.properties"
KAFKA_LOG4J = PROJECT_ROOT / "stack" / "kafka" / "log4j2.properties"
PROMETHEUS_TEMPLATE = PROJECT_ROOT / "prometheus" / "prometheus.local.yml"
PROMETHEUS_RULES = PROJECT_ROOT / "prometheus" / "rules"

LOOPBACK = "127.0.0.1"
_POLL_SECONDS = 0.2
_PROBE_SECONDS = 2.0
_KILL_WAIT_SECONDS = 5.0
_LOG_TAIL_LINES = 12

# The broker's GC settings are those of Kafka's own start scripts
# (bin/kafka-run-class.sh); the heap comes from the settings.
_KAFKA_JVM_FLAGS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

# Processes this module started and has not reaped yet. Holding the Popen keeps
# a stopped child from lingering as a zombie (which /proc still lists) in a
# long-lived caller such as a test session, and keeps Python from warning that
# a still-running subprocess was garbage collected.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps each file; every path is absolute."""

    root: Path
    cache: Path
    kafka_version: str

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        """Resolve the stack and cache directories of `settings` against the cwd."""
        return cls(
            root=settings.stack_dir.expanduser().resolve(),
            cache=settings.stack_cache_dir.expanduser().resolve(),
            kafka_version=settings.kafka_version,
        )

    @property
    def maven_repo(self) -> Path:
        """Maven's local repository, so nothing lands in ~/.m2."""
        return self.cache / "m2"

    @property
    def kafka_libs(self) -> Path:
        """The broker's classpath: every jar of one Kafka version."""
        return self.cache / f"kafka-{self.kafka_version}" / "libs"

    @property
    def kafka_logs(self) -> Path:
        """The broker's own log4j2 files (server.log and friends)."""
        return self.root / "kafka" / "logs"

    @property
    def prometheus_targets(self) -> Path:
        """Prometheus's file_sd directory: every `*.json` in it is scraped."""
        return self.root / "prometheus" / "targets"

    @property
    def prometheus_rules(self) -> Path:
        """Rule files loaded beside the committed ones: `*.yml`, for tests."""
        return self.root / "prometheus" / "rules"

    @property
    def lock_file(self) -> Path:
        """Held while the stack is started or stopped."""
        return self.root / "stack.lock"

    def directory(self, name: ServiceName) -> Path:
        """Return the directory of one service."""
        return self.root / name

    def data_dir(self, name: ServiceName) -> Path:
        """Return where a service keeps its data."""
        return self.root / name / "data"

    def pid_file(self, name: ServiceName) -> Path:
        """Return the file holding the process id of a service."""
        return self.root / name / f"{name}.pid"

    def log_file(self, name: ServiceName) -> Path:
        """Return the file receiving a service's standard output and error."""
        return self.root / name / f"{name}.log"

    def config_file(self, name: ServiceName) -> Path:
        """Return the configuration the stack writes for a service."""
        files = {
            "kafka": "server.properties",
            "redis": "redis.conf",
            "prometheus": "prometheus.yml",
        }
        return self.root / name / files[name]


@dataclass(frozen=True)
class Health:
    """What one probe of a service found."""

    healthy: bool
    detail: str


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the stack as last seen.

    `pid` is the stack's own process of the service, None when it runs none;
    `healthy` says whether something answers the service's protocol on its
    address, which may also be a process the stack did not start.
    """

    name: ServiceName
    address: str
    pid: int | None
    healthy: bool
    detail: str
    log_file: Path

    @property
    def state(self) -> str:
        """Return up, starting, foreign (answered by another process) or down."""
        if self.pid is not None:
            return "up" if self.healthy else "starting"
        return "foreign" if self.healthy else "down"


@dataclass(frozen=True)
class StackStatus:
    """Every service of the stack, and how long the call that saw them took."""

    services: tuple[ServiceStatus, ...]
    seconds: float = 0.0
    started: tuple[ServiceName, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        """Whether every service is the stack's own and answers."""
        return all(s.state == "up" for s in self.services)

    @property
    def stopped(self) -> bool:
        """Whether no service of the stack has a process left."""
        return all(s.pid is None for s in self.services)

    def service(self, name: str) -> ServiceStatus:
        """Return the status of the service called `name`."""
        for status in self.services:
            if status.name == name:
                return status
        raise StackError(f"no service {name!r} in the stack; use one of {SERVICES}")

    def describe(self) -> str:
        """Return one aligned line per service, for printing."""
        lines = []
        for s in self.services:
            pid = f"pid {s.pid}" if s.pid is not None else "-"
            lines.append(
                f"{s.name:<11} {s.state:<8} {s.address:<23} {pid:<11} {s.detail}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class _Service:
    """How to configure, start, recognise and probe one service."""

    name: ServiceName
    address: str
    ports: tuple[int, ...]
    executable: str
    marker: str
    prepare: Callable[[], list[str]]
    probe: Callable[[float], Health]
    logs: tuple[Path, ...]


# Configuration rendering (pure) ------------------------------------------------


def render_kafka_properties(
    template: str, kafka_port: int, controller_port: int, log_dir: Path
) -> str:
    """Fill in the broker configuration template.

    Raises:
        KeyError: the template names a placeholder this function does not fill.
    """
    return Template(template).substitute(
        kafka_port=kafka_port, controller_port=controller_port, log_dir=log_dir
    )


def render_redis_conf(port: int, data_dir: Path) -> str:
    """Return the Redis configuration of the stack.

    Redis snapshots to disk every minute with at least 100 changes and on
    shutdown, so a restart of the service keeps its keys; no append-only file,
    which a dev stack does not need. Redis rewrites its process title, so the
    title template keeps the configuration path in /proc/<pid>/cmdline, which is
    how the stack recognises its own Redis.
    """
    lines = [
        "# Written by stream/stack.py at every start of the local stack.",
        f"bind {LOOPBACK}",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        "supervised no",
        'logfile ""',
        f'dir "{data_dir}"',
        "dbfilename dump.rdb",
        "save 60 100",
        "appendonly no",
        "stop-writes-on-bgsave-error no",
        "maxmemory 512mb",
        "maxmemory-policy noeviction",
        'proc-title-template "{title} {listen-addr} {server-mode} {config-file}"',
    ]
    return "\n".join(lines) + "\n"


def render_prometheus_config(
    template: str,
    rules_glob: str,
    extra_rules_glob: str,
    targets_glob: str,
    prometheus_address: str,
) -> str:
    """Fill in the Prometheus configuration template.

    Each value becomes a JSON string, which YAML reads as a double-quoted
    scalar whatever characters a path holds.

    Raises:
        KeyError: the template names a placeholder this function does not fill.
    """
    return Template(template).substitute(
        rules_glob=json.dumps(rules_glob),
        extra_rules_glob=json.dumps(extra_rules_glob),
        targets_glob=json.dumps(targets_glob),
        prometheus_address=json.dumps(prometheus_address),
    )


def render_prometheus_targets(targets: Sequence[str]) -> str:
    """Return a file_sd target file listing the worker addresses `targets`.

    The format is a JSON list of target groups; no address gives no group.
    https://prometheus.io/docs/prometheus/2.42/configuration/configuration/#file_sd_config
    """
    groups = [{"targets": list(targets), "labels": {}}] if targets else []
    return json.dumps(groups, indent=2) + "\n"


def new_cluster_id() -> str:
    """Return a random Kafka cluster id: 16 bytes in URL-safe base64, unpadded.

    Like Kafka's own `Uuid.randomUuid`, an id starting with a dash is drawn
    again, since command-line tools would take it for an option.
    """
    while True:
        raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii")
        cluster_id = raw.rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def kafka_command(
    java: str, heap: str, libs: Path, config: Path, log_dir: Path
) -> list[str]:
    """Return the command line that runs the broker in the foreground."""
    return [
        java,
        *shlex.split(heap),
        *_KAFKA_JVM_FLAGS,
        f"-Dkafka.logs.dir={log_dir}",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        "-cp",
        f"{libs}/*",
        "kafka.Kafka",
        str(config),
    ]


def prometheus_command(
    prometheus: str, port: int, config: Path, data_dir: Path
) -> list[str]:
    """Return the command line that runs Prometheus in the foreground."""
    return [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={LOOPBACK}:{port}",
        "--web.enable-lifecycle",
    ]


def kafka_jars_complete(libs: Path, kafka_version: str) -> bool:
    """Whether `libs` holds the broker jar of the version and a log4j2 binding."""
    if not libs.is_dir():
        return False
    names = {p.name for p in libs.glob("*.jar")}
    needed = (
        re.compile(rf"kafka_2\.13-{re.escape(kafka_version)}\.jar"),
        re.compile(r"log4j-core-[\d.]+\.jar"),
        re.compile(r"log4j-slf4j2-impl-[\d.]+\.jar"),
        re.compile(r"slf4j-api-2\.[\d.]+\.jar"),
    )
    return all(any(p.fullmatch(n) for n in names) for p in needed)


# Public operations -------------------------------------------------------------


def fetch(settings: Settings) -> Path:
    """Resolve the Kafka jars of `settings.kafka_version` with Maven, once.

    The jars are copied into a directory per version under the stack cache;
    when that directory is already complete, Maven is not run.

    Returns:
        The directory holding the broker's classpath.

    Raises:
        StackError: Maven is missing or fails, or the version is not Kafka 4+.
    """
    layout = Layout.of(settings)
    _check_kafka_version(layout.kafka_version)
    libs = layout.kafka_libs
    if kafka_jars_complete(libs, layout.kafka_version):
        return libs

    mvn = _require_executable("mvn", "maven")
    _require_file(POM_FILE)
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    maven_log = libs.with_name("maven.log")
    command = [
        mvn,
        "-B",
        "-q",
        "--no-transfer-progress",
        "-Dstyle.color=never",
        "-f",
        str(POM_FILE),
        f"-Dmaven.repo.local={layout.maven_repo}",
        f"-Dkafka.version={layout.kafka_version}",
        f"-Dkafka.libs={partial}",
        "dependency:copy-dependencies",
    ]
    logger.info("resolving kafka jars version=%s into=%s", layout.kafka_version, libs)
    started = time.monotonic()
    with maven_log.open("wb") as out:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    if result.returncode != 0 or not kafka_jars_complete(partial, layout.kafka_version):
        raise StackError(
            f"Maven could not resolve Kafka {layout.kafka_version} (exit"
            f" {result.returncode}); see {maven_log}. Check that Maven Central is"
            " reachable and that CRM_KAFKA_VERSION names a released version."
            + _tail(maven_log)
        )

    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    logger.info(
        "kafka jars resolved version=%s jars=%d seconds=%.1f",
        layout.kafka_version,
        len(list(libs.glob("*.jar"))),
        time.monotonic() - started,
    )
    return libs


def up(settings: Settings) -> StackStatus:
    """Start Kafka, Redis and Prometheus unless they already run; wait for them.

    Safe to call again: a service whose process is running is left alone. Kafka
    jars are resolved and the broker's storage formatted on first use.

    Returns:
        The status of every service, all healthy, with the seconds it took and
        the services this call started.

    Raises:
        StackError: a port is taken by another process, a program is missing,
            or a service does not answer within `stack_start_timeout_seconds`.
    """
    begun = time.monotonic()
    layout = Layout.of(settings)
    fetch(settings)
    with _locked(layout):
        services = _services(settings, layout)
        pids: dict[ServiceName, int] = {}
        to_start = []
        for svc in services.values():
            running = _own_pids(svc, layout)
            if running:
                logger.info("service already running name=%s", svc.name)
                pids[svc.name] = running[0]
                # Found through /proc when its pid file was lost or stale.
                layout.pid_file(svc.name).write_text(f"{running[0]}\n")
            else:
                to_start.append(svc)
        _check_ports_free(to_start, layout)

        started: dict[ServiceName, float] = {}
        for svc in to_start:
            pids[svc.name] = _start(svc, layout)
            started[svc.name] = time.monotonic()

        # The quick services first, so each readiness time logged is its own.
        for svc in sorted(services.values(), key=lambda s: s.name == "kafka"):
            _wait_healthy(svc, pids[svc.name], settings.stack_start_timeout_seconds)
            if svc.name in started:
                logger.info(
                    "service ready name=%s address=%s seconds=%.1f",
                    svc.name,
                    svc.address,
                    time.monotonic() - started[svc.name],
                )
        statuses = tuple(_status_of(svc, layout) for svc in services.values())

    return StackStatus(
        services=statuses,
        seconds=time.monotonic() - begun,
        started=tuple(started),
    )


def down(settings: Settings) -> StackStatus:
    """Stop every service of the stack: SIGTERM, then SIGKILL after a timeout.

    Processes are found by their pid files and, should a pid file be lost, by
    the stack's configuration path on their command line. Pid files are removed.

    Returns:
        The status of every service, none with a process.

    Raises:
        StackError: a process survives SIGKILL.
    """
    begun = time.monotonic()
    layout = Layout.of(settings)
    with _locked(layout):
        services = _services(settings, layout)
        _stop(list(services.values()), layout, settings.stack_stop_timeout_seconds)
        statuses = tuple(_status_of(svc, layout) for svc in services.values())
    return StackStatus(services=statuses, seconds=time.monotonic() - begun)


def status(settings: Settings) -> StackStatus:
    """Return what runs and what answers, without starting or stopping anything."""
    begun = time.monotonic()
    layout = Layout.of(settings)
    services = _services(settings, layout)
    statuses = tuple(_status_of(svc, layout) for svc in services.values())
    return StackStatus(services=statuses, seconds=time.monotonic() - begun)


def reset(settings: Settings) -> StackStatus:
    """Stop the stack and delete its directory: data, logs and configuration.

    The Maven repository and Kafka jars under `stack_cache_dir` are kept.

    Returns:
        The status after stopping, as `down` returns it.

    Raises:
        StackError: stopping failed, or the stack directory is one that must
            not be deleted (the project itself or one of its parents).
    """
    result = down(settings)
    root = Layout.of(settings).root
    if root == Path(root.anchor) or root in (PROJECT_ROOT, *PROJECT_ROOT.parents):
        raise StackError(
            f"refusing to delete {root}: it holds the project; set CRM_STACK_DIR"
            " to a directory of its own such as .stack"
        )
    shutil.rmtree(root, ignore_errors=True)
    logger.info("stack reset removed=%s", root)
    return result


def stop_service(settings: Settings, name: str) -> ServiceStatus:
    """Stop one service of the stack (for fault tests); the others keep running.

    Raises:
        StackError: `name` is not a service, or its process survives SIGKILL.
    """
    service = _service_name(name)
    layout = Layout.of(settings)
    with _locked(layout):
        svc = _services(settings, layout)[service]
        _stop([svc], layout, settings.stack_stop_timeout_seconds)
        return _status_of(svc, layout)


def start_service(settings: Settings, name: str) -> ServiceStatus:
    """Start one service of the stack unless it runs, and wait until it answers.

    Raises:
        StackError: as `up` does, for this service.
    """
    service = _service_name(name)
    layout = Layout.of(settings)
    if service == "kafka":
        fetch(settings)
    with _locked(layout):
        svc = _services(settings, layout)[service]
        running = _own_pids(svc, layout)
        if running:
            pid = running[0]
        else:
            _check_ports_free([svc], layout)
            pid = _start(svc, layout)
        _wait_healthy(svc, pid, settings.stack_start_timeout_seconds)
        return _status_of(svc, layout)


def restart_service(settings: Settings, name: str) -> ServiceStatus:
    """Stop one service and start it again with its data kept (for fault tests).

    Returns:
        The status of the service once it answers again, with its new pid.

    Raises:
        StackError: as `stop_service` and `start_service` do.
    """
    stop_service(settings, name)
    return start_service(settings, name)


def reload_prometheus(settings: Settings) -> None:
    """Write Prometheus's configuration again and have it reload, rules included.

    Raises:
        StackError: Prometheus does not run or rejects the configuration (a
            broken rule file, for instance).
    """
    layout = Layout.of(settings)
    _write_prometheus_config(settings, layout)
    url = f"http://{LOOPBACK}:{settings.prometheus_port}/-/reload"
    request = urllib.request.Request(url, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace").strip()
        raise StackError(
            f"Prometheus rejected its configuration {layout.config_file('prometheus')}"
            f": {body}; check it with `promtool check config` and fix the rule file"
            " it names"
        ) from exc
    except OSError as exc:
        raise StackError(
            f"Prometheus does not answer at {url} ({exc}); start the stack first"
        ) from exc
    logger.info("prometheus reloaded config=%s", layout.config_file("prometheus"))


# Services ----------------------------------------------------------------------


def _services(settings: Settings, layout: Layout) -> dict[ServiceName, _Service]:
    """Describe the three services of the stack for these settings."""
    kafka_address = f"{LOOPBACK}:{settings.kafka_port}"
    redis_address = f"{LOOPBACK}:{settings.redis_port}"
    prometheus_address = f"http://{LOOPBACK}:{settings.prometheus_port}"

    def prepare_kafka() -> list[str]:
        java = _require_executable("java", "openjdk-17-jre-headless")
        _write_kafka_config(settings, layout)
        _format_kafka_storage(java, layout)
        return kafka_command(
            java,
            settings.kafka_heap,
            layout.kafka_libs,
            layout.config_file("kafka"),
            layout.kafka_logs,
        )

    def prepare_redis() -> list[str]:
        server = _require_executable("redis-server", "redis-server")
        layout.data_dir("redis").mkdir(parents=True, exist_ok=True)
        config = layout.config_file("redis")
        config.write_text(
            render_redis_conf(settings.redis_port, layout.data_dir("redis"))
        )
        return [server, str(config)]

    def prepare_prometheus() -> list[str]:
        binary = _require_executable("prometheus", "prometheus")
        layout.data_dir("prometheus").mkdir(parents=True, exist_ok=True)
        config = _write_prometheus_config(settings, layout)
        return prometheus_command(
            binary, settings.prometheus_port, config, layout.data_dir("prometheus")
        )

    return {
        "kafka": _Service(
            name="kafka",
            address=kafka_address,
            ports=(settings.kafka_port, settings.kafka_controller_port),
            executable="java",
            marker=str(layout.config_file("kafka")),
            prepare=prepare_kafka,
            probe=lambda timeout: _probe_kafka(kafka_address, timeout),
            logs=(layout.log_file("kafka"), layout.kafka_logs / "server.log"),
        ),
        "redis": _Service(
            name="redis",
            address=redis_address,
            ports=(settings.redis_port,),
            executable="redis-server",
            marker=str(layout.config_file("redis")),
            prepare=prepare_redis,
            probe=lambda timeout: _probe_redis(settings.redis_port, timeout),
            logs=(layout.log_file("redis"),),
        ),
        "prometheus": _Service(
            name="prometheus",
            address=prometheus_address,
            ports=(settings.prometheus_port,),
            executable="prometheus",
            marker=str(layout.config_file("prometheus")),
            prepare=prepare_prometheus,
            probe=lambda timeout: _probe_prometheus(prometheus_address, timeout),
            logs=(layout.log_file("prometheus"),),
        ),
    }


def _write_kafka_config(settings: Settings, layout: Layout) -> Path:
    """Render the broker configuration into the stack directory."""
    _require_file(KAFKA_TEMPLATE)
    _require_file(KAFKA_LOG4J)
    layout.kafka_logs.mkdir(parents=True, exist_ok=True)
    config = layout.config_file("kafka")
    config.write_text(
        render_kafka_properties(
            KAFKA_TEMPLATE.read_text(),
            settings.kafka_port,
            settings.kafka_controller_port,
            layout.data_dir("kafka"),
        )
    )
    return config


def _format_kafka_storage(java: str, layout: Layout) -> None:
    """Format the broker's log directory unless it already carries a cluster id.

    KRaft brokers refuse to start on an unformatted directory; formatting writes
    meta.properties and the bootstrap metadata (KIP-631). With a static
    controller.quorum.voters the format needs no --standalone.
    """
    data = layout.data_dir("kafka")
    if (data / "meta.properties").exists():
        return

    cluster_id = new_cluster_id()
    format_log = layout.directory("kafka") / "format.log"
    command = [
        java,
        f"-Dkafka.logs.dir={layout.kafka_logs}",
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
        "-cp",
        f"{layout.kafka_libs}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(layout.config_file("kafka")),
    ]
    with format_log.open("wb") as out:
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    if result.returncode != 0:
        raise StackError(
            f"formatting the Kafka storage {data} failed (exit {result.returncode});"
            f" see {format_log}. If the directory is left over from another Kafka,"
            " delete it with `crm-kpi stack reset`." + _tail(format_log)
        )
    logger.info("kafka storage formatted dir=%s cluster_id=%s", data, cluster_id)


def _write_prometheus_config(settings: Settings, layout: Layout) -> Path:
    """Render the Prometheus configuration and worker targets into the stack."""
    _require_file(PROMETHEUS_TEMPLATE)
    config = layout.config_file("prometheus")
    config.parent.mkdir(parents=True, exist_ok=True)
    layout.prometheus_rules.mkdir(parents=True, exist_ok=True)
    layout.prometheus_targets.mkdir(parents=True, exist_ok=True)
    config.write_text(
        render_prometheus_config(
            PROMETHEUS_TEMPLATE.read_text(),
            str(PROMETHEUS_RULES / "*.yml"),
            str(layout.prometheus_rules / "*.yml"),
            str(layout.prometheus_targets / "*.json"),
            f"{LOOPBACK}:{settings.prometheus_port}",
        )
    )

    # A running Prometheus rereads the file as soon as it changes, so it must
    # never see it half written: the new text goes in under a name the glob
    # does not match, then takes the old one's place in one rename.
    targets = layout.prometheus_targets / "workers.json"
    partial = targets.with_name(".workers.json.partial")
    partial.write_text(render_prometheus_targets(settings.prometheus_targets))
    partial.replace(targets)
    return config


# Probes ------------------------------------------------------------------------


def _port_open(port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on the loopback port."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=timeout):
            return True
    except OSError:
        return False


def _probe_kafka(address: str, timeout: float) -> Health:
    """Ask the broker for the cluster's metadata (a DescribeCluster request)."""
    port = int(address.rsplit(":", 1)[1])
    if not _port_open(port):
        return Health(False, f"nothing listens on {address}")

    async def describe() -> dict[str, Any]:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=address, request_timeout_ms=int(timeout * 1000)
        )
        await admin.start()
        try:
            cluster: dict[str, Any] = await asyncio.wait_for(
                admin.describe_cluster(), timeout
            )
        finally:
            await admin.close()
        return cluster

    # A thread of its own gives the client a fresh event loop, so the probe
    # works the same when the caller already runs one (an async test, say).
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            cluster = pool.submit(asyncio.run, describe()).result()
    except (KafkaError, OSError, TimeoutError) as exc:
        return Health(False, f"no metadata from {address}: {exc!r}")

    brokers = sorted(int(b["node_id"]) for b in cluster.get("brokers", []))
    if not brokers:
        return Health(False, f"{address} answered with no broker yet")
    ids = ",".join(str(b) for b in brokers)
    return Health(True, f"broker {ids} of cluster {cluster.get('cluster_id')}")


def _probe_redis(port: int, timeout: float) -> Health:
    """Send PING and read the server's version."""
    # redis-py retries a refused connection three times with backoff by
    # default, which would make a probe of a stopped Redis take seconds.
    client = redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        if not client.ping():
            return Health(False, "PING got no PONG")
        info: dict[str, Any] = client.info("server")
    except redis.RedisError as exc:
        return Health(False, f"no PING reply on {LOOPBACK}:{port}: {exc}")
    finally:
        client.close()
    return Health(True, f"redis {info.get('redis_version', '?')}")


def _probe_prometheus(base_url: str, timeout: float) -> Health:
    """GET /-/ready, which answers 200 once the TSDB is open and rules loaded."""
    try:
        with urllib.request.urlopen(f"{base_url}/-/ready", timeout=timeout) as ready:
            ready.read()
        with urllib.request.urlopen(
            f"{base_url}/api/v1/status/buildinfo", timeout=timeout
        ) as response:
            build: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError) as exc:
        return Health(False, f"not ready at {base_url}: {exc}")
    return Health(True, f"ready, prometheus {build['data']['version']}")


# Processes ---------------------------------------------------------------------


def _check_ports_free(services: Sequence[_Service], layout: Layout) -> None:
    """Fail before starting anything when a port is taken by a foreign process."""
    taken = [(svc, port) for svc in services for port in svc.ports if _port_open(port)]
    if not taken:
        return

    ports = ", ".join(
        f"port {port} of {svc.name} (CRM_{_port_setting(svc, port)})"
        for svc, port in taken
    )
    # Debian's packages of Redis and Prometheus run services of their own on the
    # same default ports when their init scripts were allowed to start them.
    distro = {"redis": "redis-server", "prometheus": "prometheus"}
    commands = " or ".join(
        dict.fromkeys(
            f"`service {distro[svc.name]} stop`"
            for svc, _ in taken
            if svc.name in distro
        )
    )
    hint = f" (the distribution's own service: {commands})" if commands else ""
    raise StackError(
        f"{ports} taken by a process this stack did not start from {layout.root};"
        f" stop that process{hint} or give the stack other ports through the"
        " settings named"
    )


def _start(svc: _Service, layout: Layout) -> int:
    """Start a service in the background, detached, and record its pid."""
    directory = layout.directory(svc.name)
    directory.mkdir(parents=True, exist_ok=True)
    command = svc.prepare()
    log_file = layout.log_file(svc.name)
    with log_file.open("ab") as out:
        out.write(f"--- started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        out.flush()
        # A session of its own keeps the service alive when the caller's
        # terminal goes away or gets Ctrl-C.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
    _children[process.pid] = process
    layout.pid_file(svc.name).write_text(f"{process.pid}\n")
    logger.info(
        "service started name=%s pid=%d address=%s log=%s",
        svc.name,
        process.pid,
        svc.address,
        log_file,
    )
    return process.pid


def _wait_healthy(svc: _Service, pid: int, timeout: float) -> Health:
    """Probe a service until it answers, its process dies, or time runs out.

    The process is watched by its pid alone: until the child has called exec,
    its command line is still the caller's, so it would not be recognised as
    the service yet.
    """
    deadline = time.monotonic() + timeout
    while True:
        health = svc.probe(_PROBE_SECONDS)
        if health.healthy:
            return health
        if not _alive(pid):
            raise StackError(
                f"{svc.name} exited while starting ({health.detail}); see"
                f" {_log_names(svc)}" + _tail(svc.logs[0])
            )
        if time.monotonic() > deadline:
            raise StackError(
                f"{svc.name} did not answer on {svc.address} within {timeout:.0f} s"
                f" ({health.detail}); see {_log_names(svc)}. Run `crm-kpi stack"
                " down` and `up` again, or raise CRM_STACK_START_TIMEOUT_SECONDS"
                " on a slow machine." + _tail(svc.logs[-1])
            )
        time.sleep(_POLL_SECONDS)


def _stop(services: Sequence[_Service], layout: Layout, timeout: float) -> None:
    """SIGTERM every process of the services, SIGKILL what outlives `timeout`."""
    pids: dict[int, _Service] = {}
    for svc in services:
        for pid in _own_pids(svc, layout):
            pids[pid] = svc
            logger.info("stopping service name=%s pid=%d", svc.name, pid)
            _signal(pid, signal.SIGTERM)

    left = _wait_exit(list(pids), timeout)
    for pid in left:
        logger.warning(
            "service ignored SIGTERM, killing name=%s pid=%d seconds=%.0f",
            pids[pid].name,
            pid,
            timeout,
        )
        _signal(pid, signal.SIGKILL)
    left = _wait_exit(left, _KILL_WAIT_SECONDS)
    if left:
        raise StackError(
            f"processes {sorted(left)} of the stack survived SIGKILL; check them"
            " with `ps -o pid,stat,cmd -p <pid>` (a D state waits on the disk)"
        )

    for svc in services:
        layout.pid_file(svc.name).unlink(missing_ok=True)
        if svc.name in {s.name for s in pids.values()}:
            logger.info("service stopped name=%s", svc.name)


def _wait_exit(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until the processes are gone; return those still alive at timeout."""
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if _alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        left = [pid for pid in left if _alive(pid)]
    return left


def _signal(pid: int, signum: signal.Signals) -> None:
    """Signal a service's process group (it leads one), or the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie; reap it if it is ours."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _command_line(pid: int) -> list[str]:
    """Return a process's arguments; empty when it is gone or unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    # A process that rewrites its title (Redis does) may leave one string with
    # spaces instead of NUL-separated arguments.
    return raw.replace(b"\0", b" ").decode("utf-8", "replace").split()


def _is_instance(pid: int, svc: _Service) -> bool:
    """Whether `pid` runs the service's program with the stack's configuration."""
    if pid == os.getpid() or not _alive(pid):
        return False
    args = _command_line(pid)
    if not args or Path(args[0]).name != svc.executable:
        return False
    return any(svc.marker in arg for arg in args)


def _own_pids(svc: _Service, layout: Layout) -> list[int]:
    """Return the live processes of a service started from this stack directory.

    The pid file is read first; /proc is searched too, for a process whose pid
    file was lost, by its configuration path under the stack directory.
    """
    found: list[int] = []
    recorded = _read_pid(layout.pid_file(svc.name))
    if recorded is not None and _is_instance(recorded, svc):
        found.append(recorded)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            pid = int(entry.name)
            if pid not in found and _is_instance(pid, svc):
                found.append(pid)
    return found


def _read_pid(pid_file: Path) -> int | None:
    """Return the pid a pid file holds, None when missing or unreadable."""
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _status_of(svc: _Service, layout: Layout) -> ServiceStatus:
    """Look at one service: its own process and whether it answers."""
    pids = _own_pids(svc, layout)
    health = svc.probe(_PROBE_SECONDS)
    detail = health.detail
    if health.healthy and not pids:
        detail = f"{detail}; not started by the stack in {layout.root}"
    return ServiceStatus(
        name=svc.name,
        address=svc.address,
        pid=pids[0] if pids else None,
        healthy=health.healthy,
        detail=detail,
        log_file=svc.logs[0],
    )


@contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """Hold the stack's lock file, so two callers never start it twice at once."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Small checks ------------------------------------------------------------------


def _service_name(name: str) -> ServiceName:
    """Check that `name` is a service of the stack."""
    for service in SERVICES:
        if service == name:
            return service
    raise StackError(f"no service {name!r} in the stack; use one of {SERVICES}")


def _check_kafka_version(version: str) -> None:
    """Accept Kafka 4 or later, whose KRaft-only broker and log4j2 the stack uses."""
    match = re.fullmatch(r"(\d+)\.\d+\.\d+", version)
    if match is None or int(match.group(1)) < 4:
        raise StackError(
            f"CRM_KAFKA_VERSION={version!r}: the local stack runs Apache Kafka 4.x"
            " (KRaft, log4j2); give a release such as 4.0.2"
        )


def _require_executable(program: str, package: str) -> str:
    """Return the path of a program, or say which Debian package brings it."""
    path = shutil.which(program)
    if path is None:
        raise StackError(
            f"{program} is not on PATH; install the Debian package {package}"
            " (bash .ci/install.sh installs everything the stack needs)"
        )
    return path


def _require_file(path: Path) -> None:
    """Fail clearly when a file of the source tree is missing."""
    if not path.is_file():
        raise StackError(
            f"{path} is missing; the local stack runs from a checkout of the"
            " project (installed with `pip install -e .`)"
        )


def _port_setting(svc: _Service, port: int) -> str:
    """Return the setting (environment variable suffix) that gives a port."""
    if svc.name == "kafka" and port != svc.ports[0]:
        return "KAFKA_CONTROLLER_PORT"
    return f"{svc.name.upper()}_PORT"


def _log_names(svc: _Service) -> str:
    """Return the service's log files, for error messages."""
    return " and ".join(str(p) for p in svc.logs)


def _tail(path: Path) -> str:
    """Return the last lines of a log, indented, to append to an error."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
    except OSError:
        return ""
    if not lines:
        return ""
    return f"\nlast lines of {path}:\n" + "\n".join(f"    {line}" for line in lines)
