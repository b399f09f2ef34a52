"""docker-compose.yml and the OpenTelemetry Collector config, checked without a Docker engine.

``docker-compose config`` (Debian's docker-compose 1.29) validates the file against the Compose
schema and resolves it; the tests then read the resolved file. The collector's binary does not run
here, so its config is checked for structure: every component a pipeline names is defined, every
defined one is used, the types exist in the contrib distribution the compose file pins, and the
endpoints agree with the compose services.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import COLLECTOR, COMPOSE, REPO, load_yaml, run, tool

pytestmark = pytest.mark.system_tools  # docker-compose, a Debian package that `make test` installs

# Components of the collector image pinned in docker-compose.yml that this config may use.
COLLECTOR_COMPONENTS = {
    "receivers": {"otlp"},
    "processors": {"batch", "memory_limiter"},
    "exporters": {"otlp", "otlphttp", "debug"},
    "extensions": {"health_check"},
}
SERVICES_WITHOUT_HEALTHCHECK = {"otel-collector"}  # FROM scratch: no shell or wget to run one with


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = run([tool("docker-compose"), "-f", str(COMPOSE), "config"], cwd=REPO)
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = yaml.safe_load(result.stdout)
    return resolved


def test_docker_compose_config_is_valid() -> None:
    result = run([tool("docker-compose"), "-f", str(COMPOSE), "config", "-q"], cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_docker_compose_rejects_keys_it_does_not_know(tmp_path: Path) -> None:
    """The check above can fail: the same file with a key from a newer Compose is refused."""
    newer = "\n  jaeger:\n    develop:\n      watch: []\n"
    text = COMPOSE.read_text(encoding="utf-8").replace("\n  jaeger:\n", newer, 1)
    (tmp_path / "docker-compose.yml").write_text(text, encoding="utf-8")
    result = run([tool("docker-compose"), "-f", str(tmp_path / "docker-compose.yml"), "config", "-q"],
                 cwd=tmp_path)
    assert result.returncode != 0
    assert "develop" in result.stderr


def test_services_are_the_five_of_the_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"app", "otel-collector", "jaeger", "prometheus", "grafana"}


def test_images_are_pinned_to_versions(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: image {image!r} is not pinned"


def test_published_ports_bind_loopback_only(compose: dict[str, Any]) -> None:
    published = []
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            text = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port['published']}"
            assert text.startswith("127.0.0.1:"), f"{name}: port {port!r} is not bound to 127.0.0.1"
            published.append(text.split(":")[1])
    assert {"3000", "9090", "16686", "4318"} <= set(published)


def test_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in SERVICES_WITHOUT_HEALTHCHECK:
            assert "healthcheck" not in service
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and any("http://127.0.0.1:" in part for part in test), (name, test)
    # Grafana waits for healthy data sources.
    assert compose["services"]["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path → host path of a service's bind mounts."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target, kind = volume.get("source"), volume["target"], volume.get("type")
        else:
            source, target = volume.split(":")[:2]
            kind = "bind" if source.startswith(("/", ".")) else "volume"
        if kind == "bind":
            assert source is not None, f"bind mount without a source: {volume}"
            mounts[target] = Path(source)
    return mounts


def test_config_files_are_mounted_from_deploy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = _mounts(services["prometheus"])["/etc/prometheus"]
    assert prometheus == REPO / "deploy" / "prometheus" and (prometheus / "prometheus.yml").is_file()
    collector = _mounts(services["otel-collector"])["/etc/otelcol-contrib/config.yaml"]
    assert collector == COLLECTOR
    assert any(arg == "--config=/etc/otelcol-contrib/config.yaml" for arg in services["otel-collector"]["command"])
    grafana = _mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == REPO / "deploy" / "grafana" / "provisioning"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, file = home.rpartition("/")
    assert (grafana[folder] / file).is_file(), f"home dashboard {home} is not a mounted file"
    assert services["app"]["build"]["dockerfile"] == "deploy/app/Dockerfile"
    assert (REPO / "deploy" / "app" / "Dockerfile").is_file()


def test_prometheus_keeps_exemplars_serves_the_console_and_scrapes_the_app(compose: dict[str, Any]) -> None:
    services = compose["services"]
    command = services["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in command
    assert "--web.console.templates=/etc/prometheus/consoles" in command
    assert "--web.console.libraries=/etc/prometheus/console_libraries" in command
    # Prometheus shares the app's network namespace, so the demo's loopback /metrics is localhost:9464.
    assert services["prometheus"]["network_mode"] == "service:app"
    config = load_yaml(REPO / "deploy" / "prometheus" / "prometheus.yml")
    targets = [t for job in config["scrape_configs"] if job["job_name"] == "llm-app"
               for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["localhost:9464"]
    app_command = Path(REPO / "deploy" / "app" / "Dockerfile").read_text(encoding="utf-8")
    assert '"--metrics-port", "9464"' in app_command
    # Grafana reaches Prometheus through the app's network alias.
    assert "prometheus" in services["app"]["networks"]["default"]["aliases"]


# ---- the OpenTelemetry Collector ---------------------------------------------------------------
@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(COLLECTOR)
    return config


def test_collector_pipelines_use_only_defined_components_and_every_component_is_used(
        collector: dict[str, Any]) -> None:
    used: dict[str, set[str]] = {kind: set() for kind in ("receivers", "processors", "exporters")}
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}
        assert pipeline["receivers"] and pipeline["exporters"], name
        for kind in used:
            for component in pipeline.get(kind, []):
                assert component in (collector.get(kind) or {}), f"pipeline {name} uses undefined {kind} {component}"
                used[kind].add(component)
    for kind, names in used.items():
        assert names == set(collector[kind]), f"{kind} defined but unused: {set(collector[kind]) - names}"
    assert set(collector["service"]["extensions"]) == set(collector["extensions"])
    for kind, allowed in COLLECTOR_COMPONENTS.items():
        for component in collector.get(kind) or {}:
            assert component.split("/")[0] in allowed, f"unknown {kind} type {component}"


def test_collector_endpoints_agree_with_the_compose_services(collector: dict[str, Any],
                                                             compose: dict[str, Any]) -> None:
    protocols = collector["receivers"]["otlp"]["protocols"]
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318" and protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    app_env = compose["services"]["app"]["environment"]
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert app_env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"  # what the demo's exporter speaks
    traces = collector["service"]["pipelines"]["traces"]["exporters"]
    assert traces == ["otlp/jaeger"]
    host, port = collector["exporters"]["otlp/jaeger"]["endpoint"].split(":")
    assert host in compose["services"] and port == "4317"  # Jaeger's OTLP gRPC receiver
    assert compose["services"][host]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    health = collector["extensions"]["health_check"]["endpoint"]
    assert health == "0.0.0.0:13133"
    assert "127.0.0.1:13133:13133/tcp" in compose["services"]["otel-collector"]["ports"]
