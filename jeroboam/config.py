"""Settings: one table of options, read from defaults < INI file < environment < command line.

The same table prints the commented sample (`jeroboam config sample`) and the
README's reference, so the three never drift apart.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Option:
    section: str
    name: str
    default: object
    help: str

    @property
    def env(self) -> str:
        return f"JEROBOAM_{self.section}_{self.name}".upper()


def _default_data_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".local", "share", "jeroboam")


OPTIONS: list[Option] = [
    # Logging (issue 11), named as oslo.log names them in [DEFAULT].
    Option("DEFAULT", "debug", False, "Log at debug level, whatever [server] log_level says."),
    Option("DEFAULT", "log_file", "", "File the log is appended to (inside log_dir when that is set); "
           "empty: standard error, or a file named after the command in log_dir."),
    Option("DEFAULT", "log_dir", "", "Directory of the log file; alone, each command writes "
           "jeroboam.log (serve), jeroboam-api.log, jeroboam-worker.log or jeroboam-manage.log there."),
    Option("DEFAULT", "use_json", False, "Write each log record as one JSON object per line "
           "(oslo.log's JSON fields)."),
    Option("DEFAULT", "default_log_levels", "urllib3=WARNING,docker=WARNING,keystonemiddleware=WARNING,"
           "keystoneauth=WARNING,alembic=WARNING,stevedore=WARNING,oslo_policy=WARNING",
           "LOGGER=LEVEL pairs, comma-separated: third-party loggers kept quieter than the rest."),
    Option("server", "bind", "127.0.0.1:9511", "HOST:PORT the API listens on."),
    Option("server", "api_workers", 1, "Number of API processes."),
    Option("server", "data_dir", _default_data_dir(), "Where the embedded database and cluster state live."),
    Option("server", "database", "", "SQLAlchemy URL; empty means a SQLite file in data_dir. "
           "Use postgresql://user@host/db to scale out."),
    Option("server", "max_limit", 1000, "Largest page a list returns; also the default page size."),
    Option("server", "log_level", "info", "debug, info, warning or error."),
    Option("server", "access_log", True, "Write one structured line per request."),
    Option("auth", "strategy", "noauth", "noauth (identity from X-Project-Id/X-User-Id/X-Roles) or keystone."),
    Option("auth", "noauth_project", "default", "Project of a noauth caller that sends no X-Project-Id."),
    Option("auth", "noauth_user", "admin", "User of a noauth caller that sends no X-User-Id."),
    Option("auth", "noauth_roles", "admin,member,reader", "Roles of a noauth caller that sends no X-Roles."),
    Option("auth", "policy_file", "", "YAML or JSON file overriding policy rules; re-read within a second "
           "when it changes."),
    Option("auth", "token_cache_size", 10000, "Most validated Keystone tokens kept in the cache; the least "
           "recently used go first."),
    # Keystone (the keystone strategy): keystonemiddleware's own [keystone_authtoken] options.
    Option("keystone_authtoken", "www_authenticate_uri", "", "Public Keystone URL clients are sent to in "
           "WWW-Authenticate (default: auth_url)."),
    Option("keystone_authtoken", "auth_url", "", "Keystone URL the service user logs in at, e.g. "
           "http://keystone:5000/v3 (keystone strategy: required)."),
    Option("keystone_authtoken", "auth_type", "password", "keystoneauth1 plugin the service user logs in with."),
    Option("keystone_authtoken", "username", "", "Service user that validates tokens (password: required)."),
    Option("keystone_authtoken", "password", "", "Password of the service user (password: required)."),
    Option("keystone_authtoken", "project_name", "service", "Project of the service user."),
    Option("keystone_authtoken", "user_domain_name", "Default", "Domain of the service user."),
    Option("keystone_authtoken", "project_domain_name", "Default", "Domain of the service user's project."),
    Option("keystone_authtoken", "interface", "internal", "Which of Keystone's catalog endpoints validates "
           "tokens: public, internal or admin."),
    Option("keystone_authtoken", "region_name", "", "Region of Keystone's endpoint in the catalog."),
    Option("keystone_authtoken", "cafile", "", "CA bundle that verifies Keystone's HTTPS certificate."),
    Option("keystone_authtoken", "insecure", False, "Do not verify Keystone's HTTPS certificate."),
    Option("keystone_authtoken", "token_cache_time", 300, "Seconds a validated token is trusted without asking "
           "Keystone again, never past its expires_at; 0 asks every time."),
    Option("keystone_authtoken", "http_connect_timeout", 5, "Seconds to wait for Keystone to connect, and for "
           "each read of its answer."),
    Option("keystone_authtoken", "http_request_max_retries", 3, "Retries of a request to Keystone that could "
           "not connect; then the caller gets 503."),
    Option("worker", "threads", 4, "Tasks one worker process runs at once."),
    Option("worker", "lease_seconds", 15, "A task whose worker stops heartbeating is taken over after this "
           "(SQLite, MySQL; PostgreSQL sees a worker die from its session)."),
    Option("worker", "poll_interval", 0.2, "Seconds an idle worker waits between looks at the queue."),
    Option("worker", "service_down_seconds", 30, "A worker silent this long shows as down in mservices."),
    Option("quotas", "max_clusters_per_project", 20, "Cluster quota of a project that has no quota row."),
    Option("drivers", "disabled_drivers", "", "Comma-separated driver names not to load."),
    # Orchestration: stack limits (Heat's defaults) and where containers may run.
    Option("orchestration", "max_resources_per_stack", 1000,
           "Most resources a stack may have, group members included."),
    Option("orchestration", "max_template_size", 512 * 1024, "Largest template, in bytes."),
    Option("orchestration", "max_nested_stack_depth", 5, "Deepest nesting of group members."),
    Option("orchestration", "docker_endpoints", "",
           "Comma-separated tcp:// Docker endpoints DockerInc::Docker::Container may name besides "
           "clusters of the stack's project. Never the service's own host."),
    Option("images", "catalog", "jeroboam-node=debian",
           "Images templates may name, as image_id=os_distro[,...]. The os_distro picks the driver."),
    # Operations (issue 11): health check and metrics.
    Option("healthcheck", "disable_by_file_path", "",
           "While this file exists /healthcheck answers 503 (drain this API before maintenance)."),
    Option("metrics", "enabled", True, "Serve Prometheus metrics at /metrics, without authentication."),
    # Tenant isolation: who may reach the host, how much one request or project may ask for.
    Option("infra", "local_projects", "default",
           "Projects (ids, comma-separated) that may use server_type local, besides admins. Its nodes are "
           "root dockerds on this host: whoever holds a cluster's credentials is root here. "
           "Default: the noauth operator's project."),
    Option("server", "max_request_body_size", 114688, "Largest request body in bytes; a larger one gets 413."),
    Option("server", "max_json_body_size", 1048576, "Largest request body of the stacks API in bytes (Heat's "
                                                    "default: templates may be larger than Magnum's bodies)."),
    Option("quotas", "max_nodes_per_cluster", 100, "Largest node_count + master_count of one cluster."),
    Option("quotas", "max_nodes_per_project", 200, "Node quota (all clusters' nodes) of a project that has no "
                                                   "Node quota row."),
    Option("auth", "noauth_allow_remote", False, "Let noauth serve on a non-loopback address and answer "
                                                 "requests addressed to other names: anyone who can reach it "
                                                 "acts as any project, admin included."),
    # kubernetes driver
    Option("kubernetes", "bin_dir", "/var/cache/jeroboam/kubernetes/v1.20.2/bin",
           "Directory of kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and "
           "kube-proxy (scripts/build-kubernetes.sh puts them here; official release binaries "
           "work too). Clusters report what kube-apiserver --version says."),
    Option("kubernetes", "pause_binary", "/var/cache/jeroboam/kubernetes/v1.20.2/pause/pause",
           "A static pause binary; imported into every node as the pod sandbox image."),
    # vm provider (issue 10)
    Option("vm", "images_dir", "/var/cache/jeroboam/vm/v1",
           "Node images of the vm provider (scripts/build-vm-images.sh builds them here)."),
    Option("vm", "memory_mb", 1024,
           "Memory of each VM node in MiB (a Kubernetes master needs about 1 GiB; guests give "
           "back what they free)."),
    Option("vm", "cpus", 2, "Virtual CPUs of each VM node (under TCG each is a host thread; with one, a "
                            "Kubernetes master starved)."),
]


def _coerce(default, raw: str):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


class ConfigError(ValueError):
    """A value that cannot be used; the message names the option and where it came from."""


def _coerce_named(opt: Option, where: str, raw: str):
    try:
        return _coerce(opt.default, raw)
    except ValueError:
        raise ConfigError(f"{where}: {raw!r} is not a valid {type(opt.default).__name__}") from None


@dataclass
class Settings:
    values: dict[tuple[str, str], object] = field(default_factory=dict)

    def get(self, section: str, name: str):
        return self.values[(section, name)]

    def set(self, section: str, name: str, value) -> None:
        if (section, name) not in self.values:
            raise KeyError(f"unknown option [{section}] {name}")
        self.values[(section, name)] = value

    # Shortcuts for the settings read on hot paths or in many places.
    @property
    def database_url(self) -> str:
        url = self.get("server", "database")
        if url:
            return url
        data_dir = Path(self.get("server", "data_dir"))
        data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{data_dir / 'jeroboam.sqlite'}"

    @property
    def image_catalog(self) -> dict[str, str]:
        entries = [e.strip() for e in str(self.get("images", "catalog")).split(",") if e.strip()]
        return dict(e.split("=", 1) for e in entries)

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for child processes."""
        return {opt.env: str(self.values[(opt.section, opt.name)]) for opt in OPTIONS}


def load(config_file: str | None = None, overrides: dict[tuple[str, str], object] | None = None,
         environ: dict[str, str] | None = None) -> Settings:
    environ = os.environ if environ is None else environ
    parser = configparser.ConfigParser()
    config_file = config_file or environ.get("JEROBOAM_CONFIG")
    if config_file:
        try:
            found = parser.read(config_file)
        except configparser.Error as exc:
            raise ConfigError(f"config file {config_file}: {' '.join(str(exc).split())}") from None
        if not found:
            raise ConfigError(f"config file not found: {config_file}")
    settings = Settings()
    for opt in OPTIONS:
        value = opt.default
        if parser.has_option(opt.section, opt.name):
            value = _coerce_named(opt, f"[{opt.section}] {opt.name} in {config_file}",
                                  parser.get(opt.section, opt.name))
        if opt.env in environ:
            value = _coerce_named(opt, opt.env, environ[opt.env])
        settings.values[(opt.section, opt.name)] = value
    for key, value in (overrides or {}).items():
        if value is not None:
            settings.set(*key, value)
    return settings


def sample() -> str:
    lines = ["# Jeroboam configuration. Every option can also be set as the environment",
             "# variable named after it, e.g. JEROBOAM_SERVER_DATABASE.", ""]
    sections = dict.fromkeys(opt.section for opt in OPTIONS)  # in order of first appearance
    for section in sections:
        lines += ["", f"[{section}]"]
        for opt in (o for o in OPTIONS if o.section == section):
            default = str(opt.default).lower() if isinstance(opt.default, bool) else opt.default
            lines += [f"# {opt.help}", f"# ({opt.env})", f"#{opt.name} = {default}"]
    return "\n".join(lines).lstrip() + "\n"
