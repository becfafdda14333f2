"""Configuration the OpenStack way (oslo.config): files found where operators put them, typed
options whose bad values stop a command in one line, JEROBOAM_* environment variables and former
option names still honoured, and the sample and README table made from the same definitions.
Real `jeroboam` and `oslo-config-generator` processes where an operator would meet them."""

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jeroboam import config
from tests.support import JEROBOAM, ROOT, Process, base_env, free_port, wait_http

BIN = Path(sys.executable).parent


def run(args, env, timeout=60):
    return subprocess.run(JEROBOAM + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load(tmp_path, files=(), dirs=(), **kwargs):
    """Settings as a command finds them, with the files and directories oslo.config's default
    search would find (instead of /etc/jeroboam, which tests leave alone)."""
    return config.load(default_config_files=[str(f) for f in files], default_config_dirs=[str(d) for d in dirs],
                       **kwargs)


def test_oslo_config_generator_writes_the_sample():
    sample = subprocess.run([str(BIN / "oslo-config-generator"), "--namespace", "jeroboam"],
                            capture_output=True, text=True, timeout=120, check=True).stdout
    for section, option in [("database", "connection"), ("api", "port"), ("api", "workers"),
                            ("keystone_authtoken", "auth_url"), ("keystone_authtoken", "www_authenticate_uri"),
                            ("oslo_policy", "policy_file"), ("DEFAULT", "log_dir"), ("worker", "threads")]:
        body = sample.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
        assert re.search(rf"^#{option} =", body, re.M), (section, option)
    # Jeroboam's defaults for keystonemiddleware's options, and former names, are shown.
    assert "#project_name = service" in sample and "#http_connect_timeout = 5" in sample
    assert "# Deprecated group/name - [server]/database" in sample
    # keystonemiddleware's cache options are not offered: Jeroboam keeps its own cache.
    assert "memcached_servers" not in sample
    assert run(["config", "sample"], base_env(ROOT)).stdout == sample


def test_readme_table_is_made_from_the_options():
    readme = (ROOT / "README.md").read_text()
    assert config.reference() in readme, \
        "README's configuration table is stale: paste python -c 'from jeroboam import config; " \
        "print(config.reference())'"


def test_defaults_files_environment_command_line(tmp_path):
    main = write(tmp_path / "jeroboam.conf", "[api]\nmax_limit = 10\nworkers = 2\nport = 9600\n")
    drop_in = write(tmp_path / "jeroboam.conf.d" / "50-local.conf", "[api]\nmax_limit = 11\n")
    settings = load(tmp_path, [main], [drop_in.parent], environ={})
    assert (settings.get("api", "max_limit"), settings.get("api", "workers")) == (11, 2)  # the directory wins
    env = {"JEROBOAM_API_MAX_LIMIT": "20", "JEROBOAM_API_WORKERS": "3"}
    settings = load(tmp_path, [main], [drop_in.parent], environ=env, overrides={("api", "workers"): 4})
    assert (settings.get("api", "max_limit"), settings.get("api", "workers")) == (20, 4)
    assert settings.get("api", "port") == 9600 and settings.get("auth", "noauth_user") == "admin"


def test_former_names_still_work_and_never_beat_todays(tmp_path):
    old = write(tmp_path / "old.conf", "[server]\ndatabase = sqlite:////old.sqlite\ndata_dir = /srv/old\n"
                                       "bind = 0.0.0.0:9999\napi_workers = 3\n"
                                       "[auth]\nstrategy = noauth\npolicy_file = /etc/old-policy.yaml\n")
    settings = load(tmp_path, [old], environ={})
    assert settings.get("database", "connection") == "sqlite:////old.sqlite"
    assert (settings.get("DEFAULT", "state_path"), settings.get("api", "workers")) == ("/srv/old", 3)
    assert (settings.get("api", "host"), settings.get("api", "port")) == ("0.0.0.0", 9999)
    assert settings.get("oslo_policy", "policy_file") == "/etc/old-policy.yaml"
    assert any('"database" from group "server" is deprecated' in note for note in settings.notes)
    # Code of other branches asking for a former name gets today's value.
    assert settings.get("server", "database") == "sqlite:////old.sqlite"

    new = write(tmp_path / "new.conf", "[database]\nconnection = sqlite:////new.sqlite\n[api]\nport = 9511\n"
                                       "[oslo_policy]\npolicy_file = new-policy.yaml\n")
    settings = load(tmp_path, [old, new], environ={})
    assert settings.get("database", "connection") == "sqlite:////new.sqlite"
    assert (settings.get("api", "host"), settings.get("api", "port")) == ("0.0.0.0", 9511)
    assert settings.get("oslo_policy", "policy_file") == "new-policy.yaml"

    # In the environment, a former name beats the files, and today's name beats it.
    env = {"JEROBOAM_SERVER_DATABASE": "sqlite:////env-old.sqlite", "JEROBOAM_SERVER_BIND": "127.0.0.2:9000",
           "JEROBOAM_AUTH_POLICY_FILE": "/env-old.yaml"}
    settings = load(tmp_path, [old, new], environ=env)
    assert settings.get("database", "connection") == "sqlite:////env-old.sqlite"
    assert (settings.get("api", "host"), settings.get("api", "port")) == ("127.0.0.2", 9000)
    assert settings.get("oslo_policy", "policy_file") == "/env-old.yaml"
    env |= {"JEROBOAM_DATABASE_CONNECTION": "sqlite:////env-new.sqlite", "JEROBOAM_API_PORT": "9001"}
    settings = load(tmp_path, [old, new], environ=env)
    assert settings.get("database", "connection") == "sqlite:////env-new.sqlite"
    assert (settings.get("api", "host"), settings.get("api", "port")) == ("127.0.0.2", 9001)


@pytest.mark.parametrize("text, env, message", [
    ("[api]\nport = 99999\n", {}, "[api] port = '99999' in {conf}: Should be less than or equal to 65535"),
    ("[api]\nworkers = 0\n", {}, "[api] workers = '0' in {conf}: Should be greater than or equal to 1"),
    ("[server]\napi_workers = many\n", {}, "[server] api_workers = 'many' in {conf}: invalid literal for int()"),
    ("[api]\naccess_log = maybe\n", {}, "[api] access_log = 'maybe' in {conf}: Unexpected boolean value 'maybe'"),
    ("[api]\nauth_strategy = kerberos\n", {},
     "[api] auth_strategy = 'kerberos' in {conf}: Valid values are [noauth, keystone], but found 'kerberos'"),
    ("[orchestration]\ndocker_endpoints = http://10.0.0.1:2375\n", {},
     "[orchestration] docker_endpoints = 'http://10.0.0.1:2375' in {conf}: scheme was required to be one of ['tcp']"),
    ("", {"JEROBOAM_SERVER_API_WORKERS": "four"},
     "[api] workers = 'four' from JEROBOAM_SERVER_API_WORKERS: invalid literal for int() with base 10: 'four'"),
    ("", {"JEROBOAM_WORKER_THREADS": "-1"}, "[worker] threads = '-1' from JEROBOAM_WORKER_THREADS: Should be greater"),
    ("[server]\nbind = localhost\n", {}, "[server] bind: expected HOST:PORT, got 'localhost'"),
    ("[api]\nauth_strategy = keystone\n[keystone_authtoken]\nauth_type = pasword\n", {},
     "[keystone_authtoken] auth_type: no keystoneauth1 plugin 'pasword'"),
    ("[api]\nauth_strategy = keystone\n[keystone_authtoken]\nhttp_connect_timeout = soon\n", {},
     "[keystone_authtoken] http_connect_timeout = 'soon' in {conf}: invalid literal for int()"),
    ("[api\nport = 1\n", {}, "config file {conf}: "),
])
def test_a_bad_value_is_one_line_naming_the_option(tmp_path, text, env, message):
    conf = write(tmp_path / "jeroboam.conf", text)
    for command in (["api"], ["worker"], ["db", "upgrade"]):
        result = run([*command, "--config-file", str(conf)], base_env(tmp_path / "data", **env))
        assert result.returncode == 1, result
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("jeroboam: "), result.stderr
        assert message.format(conf=conf) in result.stderr, result.stderr


def test_missing_files_and_directories_are_one_line(tmp_path):
    for args, message in [(["--config-file", "/nonexistent/jeroboam.conf"], "config file not found: /nonexistent/"),
                          (["--config", "/nonexistent/old.ini"], "config file not found: /nonexistent/old.ini"),
                          (["--config-dir", "/nonexistent/conf.d"], "config directory not found: /nonexistent/")]:
        result = run(["db", "upgrade", *args], base_env(tmp_path))
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"jeroboam: {message}"), result.stderr


def test_default_search_and_config_dir_on_the_command_line(tmp_path):
    """oslo.config's default search (here ~/.jeroboam, looked at before /etc/jeroboam), its .conf.d
    directory, and --config-dir, seen through where `db upgrade` puts the database."""
    home = tmp_path / "home"
    write(home / ".jeroboam" / "jeroboam.conf", f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n")
    write(home / ".jeroboam" / "jeroboam.conf.d" / "db.conf", f"[database]\nconnection = sqlite:///{tmp_path}/a.db\n")
    env = base_env(tmp_path / "unused", HOME=str(home))
    del env["JEROBOAM_SERVER_DATA_DIR"]
    assert run(["db", "upgrade"], env).returncode == 0
    assert (tmp_path / "a.db").exists() and not (tmp_path / "state").exists()

    write(tmp_path / "more.d" / "10-db.conf", f"[database]\nconnection = sqlite:///{tmp_path}/b.db\n")
    write(tmp_path / "more.d" / "20-db.conf", "[database]\nconnection =\n")  # a later file wins: SQLite in state_path
    write(tmp_path / "more.d" / "ignored.txt", f"[database]\nconnection = sqlite:///{tmp_path}/c.db\n")
    result = run(["db", "upgrade", "--config-dir", str(tmp_path / "more.d")], env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "state" / "jeroboam.sqlite").exists()
    assert not (tmp_path / "b.db").exists() and not (tmp_path / "c.db").exists()


def test_unknown_keys_in_jeroboam_sections_are_logged(tmp_path):
    conf = write(tmp_path / "jeroboam.conf", "[api]\nprot = 9000\n[database]\nmax_pool_size = 5\n"
                                             "[server]\ndatabase =\n[oslo_messaging_rabbit]\nssl = true\n")
    result = run(["db", "upgrade", "--config-file", str(conf)], base_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"{conf}: [api] prot is not an option; ignored" in result.stderr
    assert f"{conf}: [database] max_pool_size is not an option; ignored" in result.stderr
    assert 'Option "database" from group "server" is deprecated' in result.stderr
    # Sections of other services (a shared file) are theirs.
    assert "oslo_messaging_rabbit" not in result.stderr


def test_api_processes_read_the_files_given_to_their_parent(tmp_path):
    """uvicorn starts each API worker process afresh: --config-file must reach them all."""
    conf = write(tmp_path / "jeroboam.conf", "[api]\nmax_request_body_size = 100\n")
    port = free_port()
    proc = Process(["serve", "--config-file", str(conf), "--bind", f"127.0.0.1:{port}", "--api-workers", "2"],
                   base_env(tmp_path / "data"), tmp_path / "serve.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url, proc)
        with httpx.Client(base_url=url, headers={"Connection": "close"}) as http:
            for _ in range(8):  # new connections: both processes answer some
                r = http.post("/v1/clustertemplates", content=b"{" + b" " * 200 + b"}",
                              headers={"Content-Type": "application/json"})
                assert r.status_code == 413 and "the limit is 100 bytes" in r.text, r.text
    finally:
        proc.stop()


def test_policy_file_beside_the_configuration_is_found(tmp_path):
    """[oslo_policy] policy_file (policy.yaml) is looked for where the configuration file is, as
    oslo.policy does for every service; oslo.policy's tools see it through Jeroboam's entry point."""
    home = tmp_path / "home"
    write(home / ".jeroboam" / "jeroboam.conf", "[api]\nmax_limit = 50\n")
    write(home / ".jeroboam" / "policy.yaml", '"cluster:get_all": "role:admin"\n')
    env = base_env(tmp_path, HOME=str(home))
    effective = subprocess.run([str(BIN / "oslopolicy-policy-generator"), "--namespace", "jeroboam"], env=env,
                               capture_output=True, text=True, timeout=120, check=True).stdout
    assert '"cluster:get_all": "role:admin"' in effective
