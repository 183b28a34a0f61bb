"""docker-compose.yml, the Dockerfile and what they mount, checked without a Docker engine.

No engine runs where the tests run, so the compose demo is never started here. What can be
checked is: the services are there; every file mounted exists in the repo; every command
the image runs is a real `handshake-lab` command line (parsed by the real argparse parser,
defaults included); the ports those commands listen on agree with what compose publishes,
with what Prometheus scrapes and with what Grafana's data source names; everything is
published on 127.0.0.1 only; the client can be scaled; Grafana's home dashboard and data
source are the lab's. `problems()` returns what is wrong; the mutation table below proves
each check can fail, by breaking one thing at a time in a copy of the files' text.
"""

from __future__ import annotations

import importlib
import json
import posixpath
import re
import shlex
import sys
import tomllib
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

import pytest

from handshake_lab.cli import build_parser
from tests.conftest import IN_CI

if TYPE_CHECKING:
    import argparse

REPO: Final = Path(__file__).resolve().parents[2]
COMPOSE: Final = "docker-compose.yml"
TOP_FILES: Final = (COMPOSE, "Dockerfile", ".dockerignore", "pyproject.toml")
SERVICES: Final = ("server", "client", "prometheus", "grafana")
LOOPBACK: Final = "127.0.0.1"
GRAFANA_PROVISIONING: Final = PurePosixPath("/etc/grafana/provisioning")
# Compose's interpolation: ${NAME:-default} and ${NAME-default}; $$ is a literal $.
VARIABLE: Final = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")

Files = Mapping[str, str]


def repo_files() -> dict[str, str]:
    """The text of every file the compose demo is made of: the top-level files and deploy/."""
    files = {name: (REPO / name).read_text() for name in TOP_FILES}
    for path in sorted((REPO / "deploy").rglob("*")):
        if path.is_file():
            files[path.relative_to(REPO).as_posix()] = path.read_text()
    return files


def load_yaml(text: str) -> Any:
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        message = "PyYAML is not installed (the test extras bring it)"
        if IN_CI:
            pytest.fail(f"in CI every test dependency must be present: {message}")
        pytest.skip(message)
    return yaml.safe_load(text)


class NotACommand(Exception):
    pass


def parse_command(argv: list[str]) -> argparse.Namespace:
    """`argv` (without the program name) through the real `handshake-lab` parser."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse's way of saying no (or of printing --help)
        raise NotACommand(" ".join(argv)) from exc


def interpolate(word: str) -> str:
    """Compose's variable substitution, with every variable unset: its default."""
    return VARIABLE.sub(lambda m: m.group(2) or "", word).replace("$$", "$")


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command", [])
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    return [interpolate(w) for w in words]


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def published_ports(service: Mapping[str, Any]) -> list[tuple[str | None, str, int]]:
    """(host address or None for every interface, host port, container port) per entry."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((entry.get("host_ip"), str(entry.get("published", "")), entry["target"]))
            continue
        parts = str(entry).split("/")[0].split(":")
        host_ip = parts[0] if len(parts) == 3 else None
        host_port = parts[-2] if len(parts) >= 2 else ""
        ports.append((host_ip, host_port, int(parts[-1])))
    return ports


def mounts(service: Mapping[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(kind "bind" or "volume", source, target, read-only) per volume of a service."""
    found = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            source, target = str(entry.get("source", "")), str(entry["target"])
            kind, read_only = entry.get("type", "volume"), bool(entry.get("read_only"))
        else:
            source, target, *mode = str(entry).split(":")
            read_only = "ro" in ",".join(mode).split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        found.append((kind, source, target, read_only))
    return found


def host_path(service: Mapping[str, Any], container_path: str) -> str | None:
    """The repo-relative path a bind mount puts at `container_path`, if one does."""
    path = PurePosixPath(container_path)
    for kind, source, target, _ in mounts(service):
        if kind == "bind" and (
            path == PurePosixPath(target) or PurePosixPath(target) in path.parents
        ):
            inside = path.relative_to(target)
            return posixpath.normpath(posixpath.join(source, str(inside)))
    return None


def exists(files: Files, path: str) -> bool:
    return path in files or any(name.startswith(path.rstrip("/") + "/") for name in files)


def yaml_files_under(files: Files, directory: str) -> Iterator[tuple[str, Any]]:
    for name in sorted(files):
        if posixpath.dirname(name) == directory and name.endswith((".yml", ".yaml")):
            yield name, load_yaml(files[name])


class Checks:
    """Each method appends what is wrong to `self.found`."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.found: list[str] = []
        self.compose: dict[str, Any] = load_yaml(files[COMPOSE])
        self.services: dict[str, Any] = self.compose.get("services") or {}
        self.args: dict[str, argparse.Namespace | None] = {}  # None: not a command line

    def problem(self, text: str) -> None:
        self.found.append(text)

    def run(self) -> list[str]:
        missing = [name for name in SERVICES if name not in self.services]
        if missing:
            self.problem(f"services missing from {COMPOSE}: {missing}")
            return self.found
        for check in (
            self.mounts_exist,
            self.published_on_loopback_only,
            self.image,
            self.server,
            self.healthcheck,
            self.client,
            self.prometheus,
            self.grafana,
        ):
            check()
        return self.found

    def parsed(self, name: str) -> argparse.Namespace | None:
        if name not in self.args:
            self.args[name] = None
            try:
                self.args[name] = parse_command(command_of(self.services[name]))
            except NotACommand as exc:
                self.problem(f"{name}: its command is not a handshake-lab command line: {exc}")
        return self.args[name]

    def mounts_exist(self) -> None:
        declared = self.compose.get("volumes") or {}
        for name, service in self.services.items():
            for kind, source, target, _ in mounts(service):
                if kind == "volume" and source and source not in declared:
                    self.problem(f"{name}: volume {source!r} is not declared under volumes:")
                if kind != "bind":
                    continue
                path = posixpath.normpath(source)
                if not source.startswith("./deploy/"):
                    self.problem(f"{name}: bind mount {source} is not from ./deploy/")
                elif not exists(self.files, path):
                    self.problem(
                        f"{name}: bind mount {source} -> {target}: no such file in the repo"
                    )

    def published_on_loopback_only(self) -> None:
        for name, service in self.services.items():
            for host_ip, host_port, container_port in published_ports(service):
                if host_ip != LOOPBACK:
                    self.problem(
                        f"{name}: port {container_port} is published on {host_ip or 'every'} "
                        f"interface(s), not on {LOOPBACK} only"
                    )
                if host_port in ("", "0"):
                    self.problem(f"{name}: port {container_port} on a random host port")

    def image(self) -> None:
        """The Dockerfile: a slim Python, not root, `handshake-lab` as the entrypoint, a CMD
        that is one of its command lines, and a build context with the whole package."""
        joined = re.sub(r"\\\n", " ", self.files["Dockerfile"])  # continuation lines joined
        # The last of each instruction is the one that counts (as for Docker).
        instructions = dict(
            [*line.split(None, 1), ""][:2]
            for line in joined.splitlines()
            if line.strip() and not line.startswith("#")
        )
        if instructions.get("FROM") != "python:3.11-slim":
            self.problem(f"Dockerfile: FROM {instructions.get('FROM')}, not python:3.11-slim")
        user = instructions.get("USER", "root").split(":")[0]
        if user in ("root", "0"):
            self.problem("Dockerfile: runs as root (no USER, or USER root)")
        if not re.search(r"apt-get install [^\n]*--no-install-recommends [^\n]*iproute2", joined):
            self.problem("Dockerfile: iproute2 (ss) not installed with --no-install-recommends")
        entrypoint = json.loads(instructions.get("ENTRYPOINT", "null"))
        if entrypoint != ["handshake-lab"]:
            self.problem(f"Dockerfile: ENTRYPOINT {entrypoint}, not the handshake-lab command")
        try:
            parse_command(json.loads(instructions.get("CMD", "[]")))
        except NotACommand as exc:
            self.problem(f"Dockerfile: CMD is not a handshake-lab command line: {exc}")
        ignored = [
            line.strip()
            for line in self.files[".dockerignore"].splitlines()
            if line.strip() and not line.startswith("#")
        ]
        project = tomllib.loads(self.files["pyproject.toml"])
        needed = ["pyproject.toml", project["project"]["readme"]]
        needed += project["tool"]["setuptools"]["packages"]
        for path in needed:
            if any(PurePosixPath(path).match(pattern) for pattern in ignored):
                self.problem(f".dockerignore keeps {path} out of the image's build context")
        for name, service in self.services.items():
            if "build" in service and service["build"] not in (".", "./"):
                self.problem(f"{name}: builds from {service['build']}, not the repo's Dockerfile")
            if "build" in service and service.get("entrypoint") is not None:
                self.problem(f"{name}: overrides the image's entrypoint")

    def server(self) -> None:
        server = self.services["server"]
        args = self.parsed("server")
        if args is None:
            return
        if args.command != "server":
            self.problem(f"server: runs `handshake-lab {args.command}`, not the server")
            return
        if args.no_toy_tls or args.no_real_tls:
            self.problem("server: a TLS listener is off")
        if not args.ss_interval > 0:
            self.problem("server: the ss sampler is off")
        if not args.metrics_port:
            self.problem("server: metrics are off")
        for option in ("host", "metrics_host"):
            if getattr(args, option) != "0.0.0.0":
                flag = "--" + option.replace("_", "-")
                self.problem(f"server: {flag} is not 0.0.0.0: not reachable from outside it")
        published = {port for _, _, port in published_ports(server)}
        if published != server_ports(args):
            self.problem(
                f"server: publishes {sorted(published)} but listens on {sorted(server_ports(args))}"
            )
        if args.certs_dir is None or not self.in_named_volume(server, str(args.certs_dir)):
            self.problem(f"server: --certs-dir {args.certs_dir} is not in a named volume")

    def in_named_volume(self, service: Mapping[str, Any], path: str) -> str | None:
        for kind, source, target, _ in mounts(service):
            if kind == "volume" and PurePosixPath(target) in (
                PurePosixPath(path),
                *PurePosixPath(path).parents,
            ):
                return source
        return None

    def healthcheck(self) -> None:
        check = self.services["server"].get("healthcheck", {}).get("test")
        if not check:
            self.problem("server: no healthcheck (the client waits for service_healthy)")
            return
        words = shlex.split(check[1]) if check[0] == "CMD-SHELL" else list(check[1:])
        if check[0] not in ("CMD", "CMD-SHELL") or words[:1] != ["handshake-lab"]:
            self.problem(f"server: the healthcheck is not a handshake-lab command: {check}")
            return
        try:
            args = parse_command(words[1:])
        except NotACommand as exc:
            self.problem(f"server: the healthcheck is not a handshake-lab command line: {exc}")
            return
        server = self.args.get("server")
        url = urllib.parse.urlsplit(getattr(args, "url", ""))
        if (args.command, getattr(args, "client_command", None)) != ("client", "get"):
            self.problem("server: the healthcheck is not `handshake-lab client get`")
        elif server is not None and (url.hostname, url.port) != (LOOPBACK, server.port):
            self.problem(f"server: the healthcheck asks {url.netloc}, not the server's port")

    def client(self) -> None:
        client = self.services["client"]
        if "container_name" in client:
            self.problem("client: has a container_name, so --scale client=N cannot work")
        if client.get("ports"):
            self.problem("client: publishes ports, so --scale client=N cannot work")
        if client.get("depends_on", {}).get("server", {}).get("condition") != "service_healthy":
            self.problem("client: does not wait for the server to be healthy")
        args, server = self.parsed("client"), self.args.get("server")
        if args is None or server is None:
            return
        if (args.command, getattr(args, "client_command", None)) != ("client", "load"):
            self.problem("client: does not run `handshake-lab client load`")
            return
        if args.host not in self.services:
            self.problem(f"client: --host {args.host} is not a service")
        elif args.host == "server":
            theirs = (args.port, args.toy_tls_port, args.real_tls_port)
            ours = (server.port, server.toy_tls_port, server.real_tls_port)
            if theirs != ours:
                self.problem(f"client: sends to ports {theirs}, the server listens on {ours}")
        volume = self.in_named_volume(client, str(args.cafile))
        if args.cafile is None or volume is None:
            self.problem(f"client: --cafile {args.cafile} is not in a named volume")
        elif volume != self.in_named_volume(self.services["server"], str(server.certs_dir)):
            self.problem("client: --cafile is not in the volume the server writes its certs to")
        elif not any(s == volume and ro for _, s, _, ro in mounts(client)):
            self.problem("client: mounts the certificates writable")

    def prometheus(self) -> None:
        prometheus = self.services["prometheus"]
        flags = dict(
            [*w.split("=", 1), ""][:2] for w in command_of(prometheus) if w.startswith("--")
        )
        config_path = host_path(prometheus, flags.get("--config.file", ""))
        if config_path is None or config_path not in self.files:
            self.problem(f"prometheus: --config.file {flags.get('--config.file')} is not mounted")
            return
        listen_port = int(flags.get("--web.listen-address", ":9090").rsplit(":", 1)[1])
        if listen_port not in {port for _, _, port in published_ports(prometheus)}:
            self.problem(f"prometheus: its port {listen_port} is not published")
        config = load_yaml(self.files[config_path])
        scraped: dict[str, str] = {}
        for job in config.get("scrape_configs", []):
            for static in job.get("static_configs", []):
                for target in static.get("targets", []):
                    host, port = target.rsplit(":", 1)
                    self.scrape_target(job["job_name"], host, int(port))
                    scraped[host] = "static"
            for sd in job.get("dns_sd_configs", []):
                for host in sd.get("names", []):
                    self.scrape_target(job["job_name"], host, int(sd.get("port", 0)))
                    scraped[host] = f"dns {sd.get('type', 'SRV')}"
        for name in ("server", "client"):
            if name not in scraped:
                self.problem(f"{config_path}: does not scrape {name}")
        if scraped.get("client") not in (None, "dns A"):
            self.problem(
                f"{config_path}: scrapes client by {scraped['client']} targets, so with "
                "--scale client=N only one replica is seen (use dns_sd_configs type A)"
            )

    def scrape_target(self, job: str, host: str, port: int) -> None:
        if host not in self.services:
            self.problem(f"prometheus job {job}: scrapes {host}, which is not a service")
            return
        args = self.parsed(host)
        if args is None:
            return
        if getattr(args, "metrics_port", None) != port:
            self.problem(
                f"prometheus job {job}: scrapes {host}:{port}, but {host} serves metrics on "
                f"{getattr(args, 'metrics_port', None)}"
            )
        elif args.metrics_host != "0.0.0.0":
            self.problem(f"prometheus job {job}: {host}'s metrics are on {args.metrics_host} only")

    def grafana(self) -> None:
        grafana = self.services["grafana"]
        env = environment_of(grafana)
        if (env.get("GF_AUTH_ANONYMOUS_ENABLED"), env.get("GF_AUTH_ANONYMOUS_ORG_ROLE")) != (
            "true",
            "Viewer",
        ):
            self.problem("grafana: no anonymous read-only (Viewer) access")
        home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
        home_file = host_path(grafana, home)
        if home_file is None or home_file not in self.files:
            self.problem(f"grafana: the home dashboard {home!r} is not a mounted file")
        elif "panels" not in json.loads(self.files[home_file]):
            self.problem(f"grafana: the home dashboard {home_file} is not a dashboard")
        provisioning = {
            kind: host_path(grafana, str(GRAFANA_PROVISIONING / kind))
            for kind in ("datasources", "dashboards")
        }
        sources = [
            source
            for _, config in yaml_files_under(self.files, provisioning["datasources"] or "")
            for source in config.get("datasources", [])
        ]
        providers = [
            provider
            for _, config in yaml_files_under(self.files, provisioning["dashboards"] or "")
            for provider in config.get("providers", [])
        ]
        if not sources or not providers:
            self.problem("grafana: no data source or no dashboard provider is provisioned")
            return
        uids = {source.get("uid") for source in sources}
        for source in sources:
            url = urllib.parse.urlsplit(source.get("url", ""))
            prometheus = command_of(self.services["prometheus"])
            listen = [w for w in prometheus if w.startswith("--web.listen-address=")]
            port = int(listen[0].rsplit(":", 1)[1]) if listen else 9090
            if (url.hostname, url.port) != ("prometheus", port):
                self.problem(f"grafana: data source {source.get('name')} is {url.netloc}")
        directories = []
        for provider in providers:
            directory = host_path(grafana, provider.get("options", {}).get("path", ""))
            if (
                provider.get("type") != "file"
                or directory is None
                or not exists(self.files, directory)
            ):
                self.problem(
                    f"grafana: dashboard provider {provider.get('name')} reads no repo dir"
                )
                continue
            directories.append(directory)
        if home_file is not None and posixpath.dirname(home_file) not in directories:
            self.problem(f"grafana: the home dashboard {home_file} is not a provisioned one")
        for directory in directories:
            for name in sorted(self.files):
                if posixpath.dirname(name) == directory and name.endswith(".json"):
                    for panel in json.loads(self.files[name])["panels"]:
                        named = [panel, *panel.get("targets", [])]
                        wrong = {p["datasource"].get("uid") for p in named if "datasource" in p}
                        if "datasource" not in panel or not wrong <= uids:
                            self.problem(
                                f"{name}: panel {panel.get('title')!r} uses data source "
                                f"{wrong or 'none'}, provisioned: {uids}"
                            )


def server_ports(args: argparse.Namespace) -> set[int]:
    """Every port `handshake-lab server` listens on with these arguments."""
    ports = {args.port, args.metrics_port}
    if not args.no_toy_tls:
        ports.add(args.toy_tls_port)
    if not args.no_real_tls:
        ports.add(args.real_tls_port)
    return ports - {0}


def problems(files: Files) -> list[str]:
    return Checks(files).run()


def test_the_compose_demo_holds_together() -> None:
    assert problems(repo_files()) == []


def replace(old: str, new: str, file: str = COMPOSE) -> Callable[[dict[str, str]], None]:
    def mutate(files: dict[str, str]) -> None:
        assert old in files[file], f"{old!r} is not in {file}: the mutation tests nothing"
        files[file] = files[file].replace(old, new, 1)

    return mutate


def without(name: str) -> Callable[[dict[str, str]], None]:
    def mutate(files: dict[str, str]) -> None:
        assert name in files
        del files[name]

    return mutate


PROMETHEUS_YML: Final = "deploy/prometheus/prometheus.yml"
DATASOURCE_YML: Final = "deploy/grafana/provisioning/datasources/prometheus.yml"
DASHBOARD_JSON: Final = "deploy/grafana/dashboards/handshake-lab.json"

# One thing broken at a time, and the problem it must cause.
MUTATIONS: Final = [
    pytest.param(replace("  grafana:\n", "  graphs:\n"), "services missing", id="no-grafana"),
    pytest.param(
        replace("./deploy/prometheus/prometheus.yml:", "./deploy/prometheus/missing.yml:"),
        "no such file in the repo",
        id="mount-of-a-missing-file",
    ),
    pytest.param(without(PROMETHEUS_YML), "no such file in the repo", id="config-deleted"),
    pytest.param(
        replace("- ./deploy/grafana/dashboards:", "- /srv/dashboards:"),
        "not from ./deploy/",
        id="mount-from-outside-the-repo",
    ),
    pytest.param(replace("- certs:/certs:ro", "- keys:/certs:ro"), "not declared", id="volume"),
    pytest.param(
        replace('"127.0.0.1:9090:9090"', '"9090:9090"'), "every interface", id="prometheus-port"
    ),
    pytest.param(
        replace('"127.0.0.1:8443:8443"', '"0.0.0.0:8443:8443"'), "0.0.0.0", id="server-port"
    ),
    pytest.param(replace('"127.0.0.1:3000:3000"', '"3000"'), "random host port", id="grafana"),
    pytest.param(
        replace('      - "127.0.0.1:8444:8444"\n', ""),
        "publishes [8080, 8443, 9464]",
        id="unpublished",
    ),
    pytest.param(
        replace("      - --certs-dir\n      - /certs\n", "      - --cert-dir\n      - /certs\n"),
        "not a handshake-lab command line",
        id="server-bad-option",
    ),
    pytest.param(
        replace("      - --rate\n", "      - --rounds-per-second\n"),
        "client: its command is not a handshake-lab command line",
        id="client-bad-option",
    ),
    pytest.param(
        replace('      - --toy-tls-port\n      - "8443"\n', "      - --no-toy-tls\n"),
        "a TLS listener is off",
        id="no-toy-tls",
    ),
    pytest.param(
        replace('      - --metrics-port\n      - "9464"\n', "      - --ss-interval\n      - '0'\n"),
        "the ss sampler is off",
        id="no-sampler",
    ),
    pytest.param(
        replace("      - server\n      - --host\n      - 0.0.0.0\n", "      - server\n"),
        "--host is not 0.0.0.0",
        id="server-on-its-loopback",
    ),
    pytest.param(
        replace(
            '      - --metrics-port\n      - "9465"\n', '      - --metrics-port\n      - "9466"\n'
        ),
        "client serves metrics on 9466",
        id="scrape-port-disagrees",
    ),
    pytest.param(
        replace(
            '- --metrics-host\n      - 0.0.0.0\n      - --metrics-port\n      - "9465"',
            '- --metrics-port\n      - "9465"',
        ),
        "client's metrics are on 127.0.0.1 only",
        id="client-metrics-on-its-loopback",
    ),
    pytest.param(
        replace('targets: ["server:9464"]', 'targets: ["lab:9464"]', PROMETHEUS_YML),
        "scrapes lab, which is not a service",
        id="scrape-unknown-service",
    ),
    pytest.param(
        replace(
            'dns_sd_configs:\n      - names: ["client"]\n        type: A\n        port: 9465\n'
            "        refresh_interval: 10s\n",
            'static_configs:\n      - targets: ["client:9465"]\n',
            PROMETHEUS_YML,
        ),
        "only one replica is seen",
        id="client-scraped-statically",
    ),
    pytest.param(
        replace('names: ["client"]', 'names: ["server"]', PROMETHEUS_YML),
        "does not scrape client",
        id="client-not-scraped",
    ),
    pytest.param(
        replace("      - --host\n      - server\n", "      - --host\n      - lab-server\n"),
        "--host lab-server is not a service",
        id="client-host",
    ),
    pytest.param(
        replace('      - "8444"\n      - --rate', '      - "8445"\n      - --rate'),
        "client: sends to ports",
        id="client-port",
    ),
    pytest.param(
        replace(
            "      - --cafile\n      - /certs/ca.pem\n", "      - --cafile\n      - /tmp/ca.pem\n"
        ),
        "--cafile /tmp/ca.pem is not in a named volume",
        id="cafile-not-in-volume",
    ),
    pytest.param(replace("- certs:/certs:ro", "- certs:/certs"), "writable", id="certs-rw"),
    pytest.param(
        replace("    depends_on:\n      server:\n        condition: service_healthy\n", ""),
        "does not wait for the server",
        id="client-does-not-wait",
    ),
    pytest.param(
        replace("  client:\n    <<: *lab\n", "  client:\n    <<: *lab\n    container_name: c\n"),
        "container_name",
        id="client-container-name",
    ),
    pytest.param(
        replace(
            "  client:\n    <<: *lab\n",
            '  client:\n    <<: *lab\n    ports: ["127.0.0.1:9465:9465"]\n',
        ),
        "client: publishes ports",
        id="client-published",
    ),
    pytest.param(
        replace('"client", "get", "--timeout"', '"client", "fetch", "--timeout"'),
        "healthcheck is not a handshake-lab command line",
        id="healthcheck-bad-command",
    ),
    pytest.param(
        replace("http://127.0.0.1:8080/health", "http://127.0.0.1:8081/health"),
        "not the server's port",
        id="healthcheck-port",
    ),
    pytest.param(
        replace('["CMD", "handshake-lab",', '["CMD", "curl",'),
        "healthcheck is not a handshake-lab command",
        id="healthcheck-curl",
    ),
    pytest.param(
        replace('ENTRYPOINT ["handshake-lab"]', 'ENTRYPOINT ["python"]', "Dockerfile"),
        "ENTRYPOINT",
        id="entrypoint",
    ),
    pytest.param(
        replace('CMD ["server", "--host"', 'CMD ["serve", "--host"', "Dockerfile"),
        "CMD is not a handshake-lab command line",
        id="cmd",
    ),
    pytest.param(replace("USER lab\n", "", "Dockerfile"), "runs as root", id="root"),
    pytest.param(
        replace("--no-install-recommends iproute2", "iproute2", "Dockerfile"),
        "--no-install-recommends",
        id="recommends",
    ),
    pytest.param(
        replace("FROM python:3.11-slim", "FROM python:3.11", "Dockerfile"), "FROM", id="base"
    ),
    pytest.param(
        replace("build\n", "build\nclient\n", ".dockerignore"),
        ".dockerignore keeps client out",
        id="dockerignore-package",
    ),
    pytest.param(
        replace("GF_AUTH_ANONYMOUS_ORG_ROLE: Viewer", "GF_AUTH_ANONYMOUS_ORG_ROLE: Editor"),
        "anonymous read-only",
        id="anonymous-editor",
    ),
    pytest.param(
        replace("dashboards/handshake-lab.json", "dashboards/home.json"),
        "is not a mounted file",
        id="home-dashboard-missing",
    ),
    pytest.param(
        replace(
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: /etc/grafana/dashboards/",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: /usr/share/grafana/",
        ),
        "is not a mounted file",
        id="home-dashboard-not-mounted",
    ),
    pytest.param(
        replace("uid: prometheus", "uid: prom", DATASOURCE_YML),
        "uses data source {'prometheus'}, provisioned: {'prom'}",
        id="datasource-uid",
    ),
    pytest.param(
        replace('"uid": "prometheus"', '"uid": "other"', DASHBOARD_JSON),
        "uses data source {'other'}",
        id="panel-datasource-uid",
    ),
    pytest.param(
        replace("url: http://prometheus:9090", "url: http://localhost:9090", DATASOURCE_YML),
        "is localhost:9090",
        id="datasource-url",
    ),
    pytest.param(
        replace(
            "path: /etc/grafana/dashboards",
            "path: /var/lib/grafana/dashboards",
            "deploy/grafana/provisioning/dashboards/handshake-lab.yml",
        ),
        "reads no repo dir",
        id="provider-path",
    ),
    pytest.param(
        without("deploy/grafana/provisioning/datasources/prometheus.yml"),
        "no data source",
        id="no-datasource",
    ),
    pytest.param(
        replace("--config.file=/etc/prometheus/prometheus.yml", "--config.file=/etc/p.yml"),
        "is not mounted",
        id="prometheus-config-path",
    ),
]


@pytest.mark.parametrize(("mutate", "expected"), MUTATIONS)
def test_each_check_catches_what_it_is_for(
    mutate: Callable[[dict[str, str]], None], expected: str
) -> None:
    files = repo_files()
    mutate(files)
    found = problems(files)
    assert any(expected in problem for problem in found), found


def test_the_image_installs_every_package_the_command_imports() -> None:
    """The image runs a non-editable install of pyproject.toml's packages: every package of
    this repo in use here, `handshake-lab`'s (build_parser, imported above) among them, must
    be one of them, or the entrypoint fails where the tests, on an editable install, pass."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    installed = set(project["tool"]["setuptools"]["packages"])
    ours = {
        name.split(".")[0]
        for name, module in list(sys.modules.items())
        if (file := getattr(module, "__file__", None))
        and Path(file).resolve().is_relative_to(REPO)
        and not Path(file).resolve().is_relative_to(REPO / ".venv")
    }
    assert "handshake_lab" in ours
    assert ours - {"tests"} <= installed, f"not in pyproject.toml: {ours - {'tests'} - installed}"
