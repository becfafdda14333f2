"""Configuration with oslo.config, found and read as every OpenStack service's is.

Files: `--config-file` and `--config-dir` (both may repeat; later ones win), else oslo.config's
default search: /etc/jeroboam/jeroboam.conf and /etc/jeroboam/jeroboam.conf.d/*.conf (also in
~/.jeroboam/ and ~/). The environment beats the files: JEROBOAM_<GROUP>_<NAME>, and the same
built from an option's former name. The command line beats both.

OPTIONS is the one table of Jeroboam's own options. keystonemiddleware and oslo.policy read
their [keystone_authtoken] and [oslo_policy] options from the same ConfigOpts; LIBRARY holds the
defaults and words Jeroboam gives the ones it documents. list_opts() feeds
`oslo-config-generator --namespace jeroboam` (`jeroboam config sample`) and reference() the
README's table, so the three never drift apart.
"""

from __future__ import annotations

import copy
import glob
import io
import logging
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from oslo_config import cfg, types

KEYSTONE = "keystone_authtoken"
POLICY = "oslo_policy"
# How `jeroboam api` hands its configuration files to its worker processes (uvicorn spawns them).
CONFIG_ARGS_ENV = "JEROBOAM_CONFIG_ARGS"


def _default_state_path() -> str:
    return os.path.join(os.path.expanduser("~"), ".local", "share", "jeroboam")


def _renamed(group: str, name: str | None = None) -> list[cfg.DeprecatedOpt]:
    """An option's former place: its group, and its name when that changed too."""
    return [cfg.DeprecatedOpt(name, group=group)]


OPTIONS: list[tuple[str, cfg.Opt]] = [
    # Logging, named as oslo.log names it.
    ("DEFAULT", cfg.BoolOpt("debug", default=False, help="Log at debug level, whatever log_level says.")),
    ("DEFAULT", cfg.StrOpt("log_level", default="info", ignore_case=True, deprecated_opts=_renamed("server"),
                           choices=[("debug", "all records"), ("info", "all but debug"),
                                    ("warning", "warnings and errors"), ("error", "errors only")],
                           help="Level of the log.")),
    ("DEFAULT", cfg.StrOpt("log_file", default="", help="File the log is appended to (inside log_dir when "
                           "that is set); empty: standard error, or a file named after the command in log_dir.")),
    ("DEFAULT", cfg.StrOpt("log_dir", default="", help="Directory of the log file; alone, each command writes "
                           "jeroboam.log (serve), jeroboam-api.log, jeroboam-worker.log or jeroboam-manage.log "
                           "there.")),
    ("DEFAULT", cfg.BoolOpt("use_json", default=False, help="Write each log record as one JSON object per "
                            "line (oslo.log's JSON fields).")),
    ("DEFAULT", cfg.ListOpt("default_log_levels", default=[
        "urllib3=WARNING", "docker=WARNING", "keystonemiddleware=WARNING", "keystoneauth=WARNING",
        "alembic=WARNING", "stevedore=WARNING", "oslo_policy=WARNING"],
        item_type=types.String(regex=r"^[^=\s]+=[A-Za-z]+$"),
        help="LOGGER=LEVEL pairs: third-party loggers kept quieter than the rest.")),
    ("DEFAULT", cfg.StrOpt("state_path", default=_default_state_path(), sample_default="~/.local/share/jeroboam",
                           deprecated_opts=_renamed("server", "data_dir"),
                           help="Where the embedded database and cluster state live.")),
    # Privilege separation: whom the API runs as when started as root.
    ("DEFAULT", cfg.StrOpt("api_user", default="jeroboam", help="User (and its group) the API runs as when "
                           "`jeroboam serve` or `jeroboam api` starts as root: the port is bound first, then the "
                           "API drops to it with no capabilities, while serve's worker stays root; the embedded "
                           "database is made this user's. root or empty: the API stays root.")),
    ("database", cfg.StrOpt("connection", default="", secret=True, deprecated_opts=_renamed("server", "database"),
                            help="SQLAlchemy URL of the database; empty means a SQLite file in state_path. "
                                 "postgresql://user:password@host/db or mysql+pymysql://... to scale out.")),
    # The API (Magnum's names).
    ("api", cfg.HostAddressOpt("host", default="127.0.0.1", help="Address the API listens on.")),
    ("api", cfg.PortOpt("port", default=9511, min=1, help="Port the API listens on.")),
    ("api", cfg.IntOpt("workers", default=1, min=1, deprecated_opts=_renamed("server", "api_workers"),
                       help="Number of API processes.")),
    ("api", cfg.IntOpt("max_limit", default=1000, min=1, deprecated_opts=_renamed("server"),
                       help="Largest page a list returns; also the default page size.")),
    ("api", cfg.IntOpt("max_request_body_size", default=114688, min=1, deprecated_opts=_renamed("server"),
                       help="Largest request body in bytes; a larger one gets 413.")),
    ("api", cfg.IntOpt("max_json_body_size", default=1048576, min=1, deprecated_opts=_renamed("server"),
                       help="Largest request body of the stacks API in bytes (Heat's default: templates may "
                            "be larger than Magnum's bodies).")),
    ("api", cfg.BoolOpt("access_log", default=True, deprecated_opts=_renamed("server"),
                        help="Write one structured line per request.")),
    ("api", cfg.StrOpt("auth_strategy", default="noauth", deprecated_opts=_renamed("auth", "strategy"),
                       choices=[("noauth", "identity from X-Project-Id, X-User-Id and X-Roles"),
                                ("keystone", "a Keystone token, checked by keystonemiddleware")],
                       help="How callers are identified.")),
    ("auth", cfg.StrOpt("noauth_project", default="default",
                        help="Project of a noauth caller that sends no X-Project-Id.")),
    ("auth", cfg.StrOpt("noauth_user", default="admin", help="User of a noauth caller that sends no X-User-Id.")),
    ("auth", cfg.ListOpt("noauth_roles", default=["admin", "member", "reader"],
                         help="Roles of a noauth caller that sends no X-Roles.")),
    ("auth", cfg.BoolOpt("noauth_allow_remote", default=False,
                         help="Let noauth serve on a non-loopback address and answer requests addressed to "
                              "other names: anyone who can reach it acts as any project, admin included.")),
    ("auth", cfg.IntOpt("token_cache_size", default=10000, min=1, help="Most validated Keystone tokens kept in "
                        "the cache; the least recently used go first.")),
    ("worker", cfg.IntOpt("threads", default=4, min=1, help="Tasks one worker process runs at once.")),
    ("worker", cfg.FloatOpt("lease_seconds", default=15, min=0.1, help="A task whose worker stops heartbeating "
                            "is taken over after this (SQLite; PostgreSQL, MariaDB and MySQL see a worker die "
                            "from its session).")),
    ("worker", cfg.FloatOpt("poll_interval", default=0.2, min=0.01,
                            help="Seconds an idle worker waits between looks at the queue.")),
    ("worker", cfg.FloatOpt("service_down_seconds", default=30, min=1,
                            help="A worker silent this long shows as down in mservices.")),
    ("quotas", cfg.IntOpt("max_clusters_per_project", default=20, min=0,
                          help="Cluster quota of a project that has no quota row.")),
    ("quotas", cfg.IntOpt("max_nodes_per_cluster", default=100, min=1,
                          help="Largest node_count + master_count of one cluster.")),
    ("quotas", cfg.IntOpt("max_nodes_per_project", default=200, min=0,
                          help="Node quota (all clusters' nodes) of a project that has no Node quota row.")),
    ("drivers", cfg.ListOpt("disabled_drivers", default=[], help="Driver names not to load.")),
    # Orchestration: stack limits (Heat's defaults) and where containers may run.
    ("orchestration", cfg.IntOpt("max_resources_per_stack", default=1000, min=1,
                                 help="Most resources a stack may have, group members included.")),
    ("orchestration", cfg.IntOpt("max_template_size", default=512 * 1024, min=1,
                                 help="Largest template, in bytes.")),
    ("orchestration", cfg.IntOpt("max_nested_stack_depth", default=5, min=0,
                                 help="Deepest nesting of group members.")),
    ("orchestration", cfg.ListOpt("docker_endpoints", default=[], item_type=types.URI(schemes=["tcp"]),
                                  help="tcp:// Docker endpoints DockerInc::Docker::Container may name besides "
                                       "clusters of the stack's project. Never the service's own host.")),
    ("images", cfg.ListOpt("catalog", default=["jeroboam-node=debian"],
                           item_type=types.String(regex=r"^[^=\s]+=[^=\s]+$"),
                           help="Images templates may name, as image_id=os_distro. The os_distro picks the "
                                "driver.")),
    # Operations: health check and metrics.
    ("healthcheck", cfg.StrOpt("disable_by_file_path", default="", help="While this file exists /healthcheck "
                               "answers 503 (drain this API before maintenance).")),
    ("metrics", cfg.BoolOpt("enabled", default=True,
                            help="Serve Prometheus metrics at /metrics, without authentication.")),
    # Tenant isolation: who may reach the host.
    ("infra", cfg.ListOpt("local_projects", default=["default"], help="Projects (ids) that may use server_type "
                          "local, besides admins. Its nodes are root dockerds on this host: whoever holds a "
                          "cluster's credentials is root here. Default: the noauth operator's project.")),
    # kubernetes driver
    ("kubernetes", cfg.StrOpt("bin_dir", default="/var/cache/jeroboam/kubernetes/v1.20.2/bin",
                              help="Directory of kube-apiserver, kube-controller-manager, kube-scheduler, "
                                   "kubelet and kube-proxy (scripts/build-kubernetes.sh puts them here; official "
                                   "release binaries work too). Clusters report what kube-apiserver --version "
                                   "says.")),
    ("kubernetes", cfg.StrOpt("pause_binary", default="/var/cache/jeroboam/kubernetes/v1.20.2/pause/pause",
                              help="A static pause binary; imported into every node as the pod sandbox image.")),
    # vm provider
    ("vm", cfg.StrOpt("images_dir", default="/var/cache/jeroboam/vm/v1",
                      help="Node images of the vm provider (scripts/build-vm-images.sh builds them here).")),
    ("vm", cfg.IntOpt("memory_mb", default=1024, min=128,
                      help="Memory of each VM node in MiB (a Kubernetes master needs about 1 GiB; guests give "
                           "back what they free).")),
    ("vm", cfg.IntOpt("cpus", default=2, min=1,
                      help="Virtual CPUs of each VM node (under TCG each is a host thread; with one, a "
                           "Kubernetes master starved).")),
    # Former options that now set others (LEGACY), still read from the files of earlier versions.
    ("server", cfg.StrOpt("bind", deprecated_for_removal=True, deprecated_reason="Use [api] host and [api] port.",
                          help="HOST:PORT the API listens on.")),
    ("auth", cfg.StrOpt("policy_file", deprecated_for_removal=True,
                        deprecated_reason="Use [oslo_policy] policy_file.",
                        help="YAML or JSON file overriding policy rules.")),
]

# Former option -> the options its value sets, unless they are set where it is or higher up.
LEGACY = {("server", "bind"): (("api", "host"), ("api", "port")),
          ("auth", "policy_file"): ((POLICY, "policy_file"),)}

# The libraries' options Jeroboam documents: its default (None: the library's) and its words.
LIBRARY: dict[tuple[str, str], tuple[object, str]] = {
    (KEYSTONE, "www_authenticate_uri"): (None, "Public Keystone URL clients are sent to in WWW-Authenticate "
                                               "(default: auth_url)."),
    (KEYSTONE, "auth_url"): (None, "Keystone URL the service user logs in at, e.g. http://keystone:5000/v3 "
                                   "(keystone strategy: required)."),
    (KEYSTONE, "auth_type"): ("password", "keystoneauth1 plugin the service user logs in with."),
    (KEYSTONE, "username"): (None, "Service user that validates tokens (password: required)."),
    (KEYSTONE, "password"): (None, "Password of the service user (password: required)."),
    (KEYSTONE, "project_name"): ("service", "Project of the service user."),
    (KEYSTONE, "user_domain_name"): ("Default", "Domain of the service user."),
    (KEYSTONE, "project_domain_name"): ("Default", "Domain of the service user's project."),
    (KEYSTONE, "interface"): (None, "Which of Keystone's catalog endpoints validates tokens: public, internal "
                                    "or admin."),
    (KEYSTONE, "region_name"): (None, "Region of Keystone's endpoint in the catalog."),
    (KEYSTONE, "cafile"): (None, "CA bundle that verifies Keystone's HTTPS certificate."),
    (KEYSTONE, "insecure"): (None, "Do not verify Keystone's HTTPS certificate."),
    (KEYSTONE, "token_cache_time"): (None, "Seconds a validated token is trusted without asking Keystone again, "
                                           "never past its expires_at; 0 asks every time."),
    (KEYSTONE, "http_connect_timeout"): (5, "Seconds to wait for Keystone to connect, and for each read of its "
                                            "answer."),
    (KEYSTONE, "http_request_max_retries"): (None, "Retries of a request to Keystone that could not connect; "
                                                   "then the caller gets 503."),
    (POLICY, "policy_file"): (None, "YAML or JSON file overriding policy rules, looked for beside the "
                                    "configuration files unless absolute; re-read within a second when it "
                                    "changes."),
}


class ConfigError(ValueError):
    """A value that cannot be used; the message names the option and where it came from."""


def _names(group: str, opt: cfg.Opt) -> list[tuple[str, str]]:
    """(group, name) of an option in a file: today's, then its former ones."""
    return [(group, opt.dest)] + [(d.group or group, d.name or opt.dest) for d in opt.deprecated_opts]


# keystonemiddleware's options that Jeroboam sets itself (api/auth.py), by prefix: not in the sample.
NOT_READ = ("delay_auth_decision", "cache", "service_token_roles_required", "memcache")

# A former name, as code on other branches may still ask for it: (group, name) -> today's.
RENAMED = {former: (group, opt.dest) for group, opt in OPTIONS for former in _names(group, opt)[1:]}


def env_name(group: str, name: str) -> str:
    return f"JEROBOAM_{group}_{name}".replace("-", "_").upper()


def _get(conf: cfg.ConfigOpts, group: str, name: str):
    return conf[name] if group == "DEFAULT" else conf[group][name]


def split_bind(value: str, where: str) -> tuple[str, int]:
    """HOST and PORT of a HOST:PORT ([server] bind, --bind)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _policy_opts() -> list[tuple[str, cfg.Opt]]:
    from oslo_policy import opts

    return [(POLICY, opt) for opt in opts.list_opts()[0][1]]


def _keystone_opts(auth_type: str) -> list[tuple[str, cfg.Opt]]:
    """keystonemiddleware's options and those of the service user's keystoneauth1 plugin."""
    from keystoneauth1 import exceptions, loading
    from keystonemiddleware.auth_token import list_opts as middleware_opts

    try:
        plugin = loading.get_auth_plugin_conf_options(auth_type)
    except exceptions.NoMatchingPlugin:
        raise ConfigError(f"[{KEYSTONE}] auth_type: no keystoneauth1 plugin {auth_type!r}") from None
    return [(KEYSTONE, opt) for opt in middleware_opts()[0][1] + plugin]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Every option by group, with Jeroboam's defaults and words (entry point oslo.config.opts)."""
    groups: dict[str, list[cfg.Opt]] = {}
    for group, opt in OPTIONS:
        groups.setdefault(group, []).append(opt)
    for group, opt in _keystone_opts(LIBRARY[KEYSTONE, "auth_type"][0]) + _policy_opts():
        if group == KEYSTONE and opt.dest.startswith(NOT_READ):
            continue
        opt = copy.deepcopy(opt)  # the libraries register theirs: theirs stay untouched
        default, words = LIBRARY.get((group, opt.dest), (None, ""))
        opt.default = opt.default if default is None else default
        opt.help = words or opt.help
        groups.setdefault(group, []).append(opt)
    return list(groups.items())


def _group(group: str) -> str | None:
    return None if group == "DEFAULT" else group


def _env_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class _Collect(logging.Handler):
    """oslo.config's warnings about former names, kept until logging is set up."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


class Settings:
    """The configuration: `get(section, name)` for Jeroboam's code; `conf`, the oslo.config
    ConfigOpts, for the libraries that read their own options there."""

    def __init__(self, conf: cfg.ConfigOpts, args: list[str], command_line: dict[str, str], notes: list[str]):
        self.conf = conf
        self._args = args
        self._command_line = command_line
        self.notes = notes  # warnings for the log: former names, options that do not exist
        # Values once read, as requests read some each time: a dict look-up, not oslo.config's ~2 us.
        self._values: dict[tuple[str, str], object] = {}

    def get(self, section: str, name: str):
        try:
            return self._values[section, name]
        except KeyError:
            pass
        group, option = RENAMED.get((section, name), (section, name))
        try:
            value = self._values[section, name] = _get(self.conf, group, option)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            raise KeyError(f"unknown option [{group}] {option}") from None
        return value

    @property
    def database_url(self) -> str:
        url = self.get("database", "connection")
        if url:
            return url
        state = Path(self.get("DEFAULT", "state_path"))
        state.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{state / 'jeroboam.sqlite'}"

    @property
    def image_catalog(self) -> dict[str, str]:
        return dict(entry.split("=", 1) for entry in self.get("images", "catalog"))

    def child_env(self) -> dict[str, str]:
        """Environment under which a child process's load() gives these settings: the same files,
        and the command line's values as the environment (which beats the files)."""
        return {CONFIG_ARGS_ENV: shlex.join(self._args), **self._command_line}


def _files(conf: cfg.ConfigOpts) -> list[tuple[str, dict]]:
    """The configuration files read, in order, with their sections as oslo.config parses them."""
    paths = list(conf.config_file)
    for directory in conf.config_dir or ():
        paths += sorted(glob.glob(os.path.join(directory, "*.conf")))
    parsed = []
    for path in paths:
        sections: dict = {}
        cfg.ConfigParser(path, sections).parse()
        parsed.append((path, sections))
    return parsed


def _where(files, group: str, opt: cfg.Opt) -> str:
    """The option, with the value and file that set it (the last file wins)."""
    for path, sections in reversed(files):
        for g, n in _names(group, opt):
            if n in sections.get(g, {}):
                return f"[{g}] {n} = {sections[g][n][-1]!r} in {path}"
    return f"[{group}] {opt.dest}"


def _unknown(files) -> list[str]:
    """Keys in Jeroboam's own sections that are no option (a typo is otherwise silently ignored)."""
    known: dict[str, set[str]] = {}
    for group, opt in OPTIONS:
        for g, n in _names(group, opt):
            known.setdefault(g, set()).add(n)
    known.pop("DEFAULT")  # shared with every library: anything may be there
    return [f"{path}: [{group}] {key} is not an option; ignored"
            for path, sections in files for group, keys in sections.items() if group in known
            for key in keys if key not in known[group]]


def _reason(exc: ValueError) -> str:
    """Why a value does not fit its type: the type's own words (oslo.config wraps them in its
    own, and some types give more than words)."""
    if isinstance(exc, cfg.Error) and isinstance(exc.__context__, ValueError):
        exc = exc.__context__
    while exc.args and isinstance(exc.args[0], Exception):
        exc = exc.args[0]
    return str(exc.args[0]) if exc.args else str(exc)


def _override(conf: cfg.ConfigOpts, group: str, name: str, value, where: str) -> None:
    try:
        conf.set_override(name, value, _group(group))
    except ValueError as exc:
        raise ConfigError(f"[{group}] {name} = {value!r} {where}: {_reason(exc)}") from None


def _settle(conf: cfg.ConfigOpts, options: list[tuple[str, cfg.Opt]], environ, files) -> None:
    """Register options, give the libraries' Jeroboam's defaults, let the environment set them,
    and read each once: a value that does not fit its type stops here, in one line."""
    for group, opt in options:
        conf.register_opt(opt, _group(group))
        default = LIBRARY.get((group, opt.dest), (None,))[0]
        if default is not None:
            conf.set_default(opt.dest, default, group)
    for group, opt in options:
        env = next((e for e in (env_name(*name) for name in _names(group, opt)) if e in environ), None)
        if env:
            _override(conf, group, opt.dest, environ[env].split(",") if opt.multi else environ[env], f"from {env}")
    for group, opt in options:
        try:
            _get(conf, group, opt.dest)
        except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError) as exc:
            raise ConfigError(f"{_where(files, group, opt)}: {_reason(exc)}") from None


def _apply_legacy(conf: cfg.ConfigOpts) -> None:
    """A former option sets the options that replace it, unless they are set at its level or higher
    (a file < the environment), as a former name of one option does."""
    rank = {cfg.Locations.user: 1, cfg.Locations.environment: 2, cfg.Locations.set_override: 2}
    for (group, name), targets in LEGACY.items():
        value = conf[group][name]
        if value is None:
            continue
        level = rank.get(conf.get_location(name, group).location, 0)
        where = f"[{group}] {name}"
        values = split_bind(value, where) if (group, name) == ("server", "bind") else (value,)
        for (target_group, target), target_value in zip(targets, values):
            if rank.get(conf.get_location(target, _group(target_group)).location, 0) < level:
                _override(conf, target_group, target, target_value, f"from {where}")


def load(args: Sequence[str] = (), overrides: dict[tuple[str, str], object] | None = None,
         environ: dict[str, str] | None = None, default_config_files: list[str] | None = None,
         default_config_dirs: list[str] | None = None) -> Settings:
    """The settings from files (args: oslo.config's --config-file/--config-dir; none: the default
    search), the environment and `overrides` (the command line's options)."""
    environ = os.environ if environ is None else environ
    args = list(args) or shlex.split(environ.get(CONFIG_ARGS_ENV, "")) or (
        ["--config-file", environ["JEROBOAM_CONFIG"]] if environ.get("JEROBOAM_CONFIG") else [])
    conf = cfg.ConfigOpts()
    collect = _Collect()
    oslo_log = logging.getLogger("oslo_config")
    oslo_log.addHandler(collect)
    oslo_log.propagate = False
    try:
        try:
            conf(args, project="jeroboam", prog="jeroboam", validate_default_values=True,
                 default_config_files=default_config_files, default_config_dirs=default_config_dirs)
        except cfg.ConfigFilesNotFoundError as exc:
            raise ConfigError(f"config file not found: {', '.join(exc.config_files)}") from None
        except cfg.ConfigFilesPermissionDeniedError as exc:
            raise ConfigError(f"config file not readable: {', '.join(exc.config_files)}") from None
        except cfg.ConfigDirNotFoundError as exc:
            raise ConfigError(f"config directory not found: {exc.config_dir}") from None
        except cfg.ConfigFileParseError as exc:
            raise ConfigError(f"config file {exc.config_file}: {exc.msg}") from None
        files = _files(conf)
        _settle(conf, OPTIONS + _policy_opts(), environ, files)
        _apply_legacy(conf)
        command_line = {}
        for (group, name), value in (overrides or {}).items():
            if value is not None:
                _override(conf, group, name, value, "on the command line")
                command_line[env_name(group, name)] = _env_value(value)
        if _get(conf, "api", "auth_strategy") == "keystone":
            # keystonemiddleware's options, only then: importing it costs a noticeable part of a second.
            from keystoneauth1 import loading

            conf.register_opts(loading.get_auth_common_conf_options(), KEYSTONE)
            conf.set_default("auth_type", LIBRARY[KEYSTONE, "auth_type"][0], KEYSTONE)
            auth_type = environ.get(env_name(KEYSTONE, "auth_type")) or conf[KEYSTONE].auth_type
            _settle(conf, _keystone_opts(auth_type), environ, files)
    finally:
        oslo_log.removeHandler(collect)
        oslo_log.propagate = True
    return Settings(conf, args, command_line, collect.lines + _unknown(files))


def sample() -> str:
    """What `oslo-config-generator --namespace jeroboam` writes."""
    from oslo_config import generator

    conf = cfg.ConfigOpts()
    generator.register_cli_opts(conf)
    conf(["--namespace", "jeroboam"], project="jeroboam", default_config_files=[], default_config_dirs=[])
    out = io.StringIO()
    generator.generate(conf, out)
    return out.getvalue()


def reference() -> str:
    """The README's table: Jeroboam's options and the libraries' it documents."""
    rows = ["| section | option | environment variable | default | meaning |", "|---|---|---|---|---|"]
    for group, opts in list_opts():
        for opt in opts:
            if group in (KEYSTONE, POLICY) and (group, opt.dest) not in LIBRARY:
                continue
            default = opt.sample_default if opt.sample_default is not None else opt.default
            default = "" if default is None else _env_value(default)
            words = opt.help
            if getattr(opt.type, "choices", None):
                words += " " + "; ".join(f"`{value}`: {what}" for value, what in opt.type.choices.items()) + "."
            if opt.deprecated_for_removal:
                words += f" Deprecated: {opt.deprecated_reason}"
            if group not in (KEYSTONE, POLICY) and opt.deprecated_opts:
                words += f" Formerly {', '.join(f'[{g}] {n}' for g, n in _names(group, opt)[1:])}."
            rows.append(f"| [{group}] | {opt.dest} | {env_name(group, opt.dest)} | `{default}` | {words} |")
    return "\n".join(rows) + "\n"
