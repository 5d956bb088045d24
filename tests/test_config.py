"""Tests for chatd.config: the shipped file, defaults, and every kind of error.

Error tests compare whole messages on purpose: file, dotted key and line are the point of
the module, so an off-by-one line or a lost key must fail a test.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
from pathlib import Path
from types import MappingProxyType

import pytest
import yaml

from chatd.config import (
    Config,
    ConfigError,
    FloodConfig,
    LimitsConfig,
    ListenConfig,
    LoggingConfig,
    MetricsConfig,
    NetConfig,
    PerIpConfig,
    PluginHostConfig,
    ServerConfig,
    StorageConfig,
    TlsConfig,
    default_config,
    load_config,
    parse_config,
)
from chatd.protocols import ProtocolRegistry
from chatd.protocols.registry import config_reference

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"
SECTIONS = {
    "listen": ListenConfig,
    "server": ServerConfig,
    "limits": LimitsConfig,
    "logging": LoggingConfig,
    "per_ip": PerIpConfig,
    "flood": FloodConfig,
    "net": NetConfig,
    "metrics": MetricsConfig,
    "plugin_host": PluginHostConfig,
}


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so errors say plain 'config.yaml' and can be compared exactly."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def load_text(folder: Path, text: str, name: str = "config.yaml") -> Config:
    """Write `text` as `name` in the current folder and load it by relative name."""
    (folder / name).write_text(text, encoding="utf-8")
    return load_config(name)


def load_error(folder: Path, text: str) -> ConfigError:
    """Load `text` and return the ConfigError it must raise."""
    with pytest.raises(ConfigError) as info:
        load_text(folder, text)
    return info.value


def checked(config: Config) -> Config:
    """`config` as a server runs it: its listeners checked against the built-in
    protocols' registrations (what --check-config and start-up do once the plugins,
    which may register protocols, are loaded)."""
    return ProtocolRegistry().check_config(config)


def check_error(folder: Path, text: str) -> ConfigError:
    """Load `text` (it must load) and return the ConfigError the protocol check raises."""
    config = load_text(folder, text)
    with pytest.raises(ConfigError) as info:
        checked(config)
    return info.value


def without_plugins(config: Config) -> Config:
    """The config with the parts the shipped file is allowed to change reset: plugins,
    and the database file (the embedded default keeps it in memory, so a bare
    ``chatd`` writes nothing where it runs; the shipped file names one)."""
    return dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, path=None),
        plugin_dirs=(),
        plugins=MappingProxyType({}),
        source=None,
        locations=MappingProxyType({}),
    )


# -- shipped file and defaults -----------------------------------------------------------


def test_shipped_config_loads_and_equals_defaults_except_plugins() -> None:
    config = checked(load_config(SHIPPED))
    assert without_plugins(config) == checked(default_config())
    assert config.source == SHIPPED
    assert config.plugin_dirs == (REPO / "plugins",)
    assert config.listen == (ListenConfig(host="127.0.0.1", port=7788, protocol="line",
                                          options=MappingProxyType({"history_replay": True,
                                                                   "password": None,
                                                                   "password_file": None})),)
    assert config.server.default_room == "#lobby"
    assert config.plugin_config("rooms")["welcome"] == (
        "Welcome to chatd, {nick}. You are in {room}. Type /help for commands."
    )
    assert dict(config.plugin_config("log")) == {"file": None, "messages": False}
    assert config.storage_path() == REPO / "data" / "chatd.sqlite3"


def test_shipped_config_spells_out_every_key() -> None:
    """The shipped file doubles as documentation, so every setting must appear in it."""
    raw = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    for name, cls in SECTIONS.items():
        # `listen` may be one mapping or a list of them: each must spell out every key,
        # its protocol's own options included.
        spelled = raw[name] if isinstance(raw[name], list) else [raw[name]]
        for section in spelled:
            keys = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("rest")}
            if name == "listen":
                keys |= set(ProtocolRegistry()[section["protocol"]].option_specs)
            assert set(section) == keys, name
    assert "plugin_dirs" in raw
    assert set(raw["plugins"]) >= {"rooms", "log"}


def test_defaults() -> None:
    config = default_config()
    assert config.listen == (ListenConfig("127.0.0.1", 7788, "line"),)
    assert config.server == ServerConfig("chatd", "#lobby")
    limits = config.limits
    assert (limits.max_line_bytes, limits.recvq_max_bytes, limits.max_output_bytes) == (
        4096, 65536, 1048576
    )
    assert (limits.max_clients, limits.reserve_fds, limits.max_nick_bytes) == (1000, 32, 32)
    assert (limits.output_soft_bytes, limits.send_timeout_seconds) == (262144, 60.0)
    assert (limits.registration_timeout_seconds, limits.idle_timeout_seconds) == (60.0, 0.0)
    assert config.per_ip == PerIpConfig(10, 10, 60.0, 3)
    assert config.flood == FloodConfig(10, 2.0, 512)
    assert config.metrics.enabled is False and config.metrics.host == "127.0.0.1"
    assert config.logging == LoggingConfig("INFO", None)
    assert config.plugin_dirs == ()
    assert dict(config.plugins) == {}
    assert config.source is None
    assert dict(config.plugin_config("anything")) == {}


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n\n   # another\n", "---\n", "~\n"])
def test_empty_file_is_defaults(in_tmp: Path, text: str) -> None:
    config = load_text(in_tmp, text)
    assert config.source == in_tmp / "config.yaml"
    assert dataclasses.replace(config, source=None) == default_config()


def test_null_sections_are_defaults(in_tmp: Path) -> None:
    config = load_text(in_tmp, "listen:\nserver:\nlimits:\nlogging:\nplugin_dirs:\nplugins:\n")
    assert dataclasses.replace(config, source=None) == default_config()


def test_partial_section_keeps_other_defaults(in_tmp: Path) -> None:
    config = load_text(in_tmp, "limits:\n  max_clients: 5\n")
    assert config.limits == dataclasses.replace(LimitsConfig(), max_clients=5)


def test_config_is_immutable() -> None:
    config = load_config(SHIPPED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.listen[0].port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.listen[0] = config.listen[0]  # type: ignore[index]
    with pytest.raises(TypeError):
        config.plugins["rooms"] = {}  # type: ignore[index]
    with pytest.raises(TypeError):
        config.plugin_config("rooms")["welcome"] = "hi"  # type: ignore[index]


# -- values ------------------------------------------------------------------------------


def test_int_accepted_for_float_field(in_tmp: Path) -> None:
    config = load_text(in_tmp, "limits:\n  close_linger_seconds: 3\n")
    assert config.limits.close_linger_seconds == 3.0
    assert type(config.limits.close_linger_seconds) is float


def test_logging_level_is_case_insensitive_and_stored_upper(in_tmp: Path) -> None:
    assert load_text(in_tmp, "logging:\n  level: debug\n").logging.level == "DEBUG"


def test_logging_file_resolves_against_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "config.yaml").write_text("logging:\n  file: logs/chatd.log\n", encoding="utf-8")
    assert load_config(sub / "config.yaml").logging.file == str(sub / "logs" / "chatd.log")
    (sub / "config.yaml").write_text("logging:\n  file: /var/log/chatd.log\n", encoding="utf-8")
    assert load_config(sub / "config.yaml").logging.file == "/var/log/chatd.log"


def test_plugin_dirs_resolve_against_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "etc" / "chatd"
    sub.mkdir(parents=True)
    (sub / "config.yaml").write_text(
        "plugin_dirs:\n  - plugins\n  - ../shared\n  - /opt/chatd/plugins\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)  # load by a relative path from somewhere else
    config = load_config(Path("etc/chatd/config.yaml"))
    assert config.plugin_dirs == (
        sub / "plugins",
        sub / ".." / "shared",
        Path("/opt/chatd/plugins"),
    )
    assert all(d.is_absolute() for d in config.plugin_dirs)
    assert config.source == sub / "config.yaml"


def test_parse_config_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "plugin_dirs: [plugins]\n"
    assert parse_config(text, source=tmp_path / "x.yaml").plugin_dirs == (tmp_path / "plugins",)
    monkeypatch.chdir(tmp_path)
    assert parse_config(text).plugin_dirs == (tmp_path / "plugins",)


def test_plugin_sections(in_tmp: Path) -> None:
    config = load_text(
        in_tmp,
        "plugins:\n  empty:\n  nested:\n    items: [1, {a: b}]\n    when: 2024-01-02\n",
    )
    assert dict(config.plugin_config("empty")) == {}
    nested = config.plugin_config("nested")
    assert nested["items"] == (1, {"a": "b"})
    assert isinstance(nested["items"][1], MappingProxyType)
    assert str(nested["when"]) == "2024-01-02"
    assert dict(config.plugin_config("missing")) == {}


def test_merge_keys_and_aliases(in_tmp: Path) -> None:
    config = load_text(
        in_tmp,
        "plugins:\n"
        "  base: &base {a: 1, b: 2}\n"
        "  derived:\n"
        "    <<: *base\n"
        "    b: 3\n"
        "  same: *base\n",
    )
    assert dict(config.plugin_config("derived")) == {"a": 1, "b": 3}
    assert dict(config.plugin_config("same")) == {"a": 1, "b": 2}


def test_with_listener() -> None:
    config = default_config()
    moved = config.with_listener(port=0)
    assert moved.listen == (ListenConfig("127.0.0.1", 0),)
    assert config.listen[0].port == 7788  # the original is untouched
    assert config.with_listener(host="0.0.0.0", port=9000).listen == (
        ListenConfig("0.0.0.0", 9000),
    )
    assert config.with_listener().listen == config.listen
    assert moved.limits == config.limits


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"port": 70000}, "listen.port: expected an integer between 0 and 65535, got 70000"),
        ({"port": True}, "listen.port: expected an integer between 0 and 65535, got True"),
        ({"host": 1}, "listen.host: expected a string, got 1"),
    ],
)
def test_with_listener_validates(kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        default_config().with_listener(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == expected
    assert info.value.file is None and info.value.line is None


# -- errors ------------------------------------------------------------------------------


def test_unknown_key_with_did_you_mean(in_tmp: Path) -> None:
    err = load_error(in_tmp, "# limits\nlimits:\n  max_line_byte: 100\n")
    assert str(err) == (
        "config.yaml:3: limits.max_line_byte: unknown key (did you mean 'max_line_bytes'?)"
    )
    assert (err.file, err.key, err.line) == ("config.yaml", "limits.max_line_byte", 3)
    assert err.message == "unknown key (did you mean 'max_line_bytes'?)"


def test_unknown_top_level_key(in_tmp: Path) -> None:
    err = load_error(in_tmp, "listn:\n  port: 1\n")
    assert str(err) == "config.yaml:1: listn: unknown key (did you mean 'listen'?)"


def test_unknown_key_without_close_match_lists_known_keys(in_tmp: Path) -> None:
    # A listener's keys beside the core's are its protocol's: checked once the plugins
    # (which may register the protocol) are loaded, with the same wording and line.
    # (Named by the absolute path, as every error found after loading is: Config.error.)
    err = check_error(in_tmp, "listen:\n  zzzzzz: 1\n")
    assert str(err) == (
        f"{in_tmp / 'config.yaml'}:2: listen.zzzzzz: unknown key (known keys: host, port, "
        "protocol, proxy_protocol, trusted_proxies, tls, history_replay, password, password_file)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "\n\nlimits:\n  max_line_bytes: abc\n",
            "config.yaml:4: limits.max_line_bytes: expected an integer between 16 and 1073741824, "
            "got 'abc'",
        ),
        (
            "limits:\n  max_clients: '5'\n",
            "config.yaml:2: limits.max_clients: expected an integer between 1 and 1048576, "
            "got '5'",
        ),
        (
            "limits:\n  max_clients: 5.0\n",
            "config.yaml:2: limits.max_clients: expected an integer between 1 and 1048576, "
            "got 5.0",
        ),
        (
            "server:\n  name: 42\n",
            "config.yaml:2: server.name: expected a string "
            "(1 to 64 characters; no control, invisible or bidi characters), got 42",
        ),
        (
            "limits:\n  close_linger_seconds: '2'\n",
            "config.yaml:2: limits.close_linger_seconds: expected a number > 0 and <= 1000000, "
            "got '2'",
        ),
        (
            "logging:\n  file: [a]\n",
            "config.yaml:2: logging.file: expected a string (a non-empty path; relative to "
            "the config file's folder), or null, got ['a']",
        ),
    ],
)
def test_wrong_type(in_tmp: Path, text: str, expected: str) -> None:
    assert str(load_error(in_tmp, text)) == expected


@pytest.mark.parametrize("account", ["my bot", "bot\u200b", "7bot", "b\u00f6t", "guest bot"])
def test_an_exempt_account_that_no_nick_can_be_is_refused(in_tmp: Path, account: str) -> None:
    """flood.exempt_accounts is matched against registered nicks: an entry no nick can
    be (a space, an invisible or non-ASCII letter) would pass --check-config and
    exempt nobody, the bot it was meant for staying delayed."""
    err = load_error(in_tmp, "flood:\n  exempt_accounts: [relaybot, " + json.dumps(account)
                     + "]\n")
    assert str(err).startswith("config.yaml:2: flood.exempt_accounts: expected a list of "
                               "strings (registered nicks"), str(err)
    assert load_text(in_tmp, "flood:\n  exempt_accounts: [RelayBot, 'br[1]dge']\n").flood \
        .exempt_accounts == ("RelayBot", "br[1]dge")


@pytest.mark.parametrize("value", ["true", "false", "yes", "on"])
def test_bool_is_not_an_int(in_tmp: Path, value: str) -> None:
    err = load_error(in_tmp, f"limits:\n  max_clients: {value}\n")
    got = repr(value in ("true", "yes", "on"))
    assert str(err) == (
        "config.yaml:2: limits.max_clients: expected an integer between 1 and 1048576, "
        f"got {got}"
    )


def test_bool_is_not_a_float(in_tmp: Path) -> None:
    err = load_error(in_tmp, "limits:\n  close_linger_seconds: true\n")
    assert str(err) == (
        "config.yaml:2: limits.close_linger_seconds: expected a number > 0 and <= 1000000, "
        "got True"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "listen:\n  port: 70000\n",
            "config.yaml:2: listen.port: expected an integer between 0 and 65535, got 70000",
        ),
        (
            "listen:\n  port: -1\n",
            "config.yaml:2: listen.port: expected an integer between 0 and 65535, got -1",
        ),
        (
            "limits:\n  max_line_bytes: 15\n",
            "config.yaml:2: limits.max_line_bytes: expected an integer between 16 and 1073741824, "
            "got 15",
        ),
        (
            "limits:\n  max_nick_bytes: 65\n",
            "config.yaml:2: limits.max_nick_bytes: expected an integer between 1 and 64, got 65",
        ),
        (
            "limits:\n  close_linger_seconds: 0\n",
            "config.yaml:2: limits.close_linger_seconds: expected a number > 0 and <= 1000000, "
            "got 0",
        ),
        (
            "limits:\n  close_linger_seconds: .inf\n",
            "config.yaml:2: limits.close_linger_seconds: expected a number > 0 and <= 1000000, "
            "got inf",
        ),
        (
            "logging:\n  level: verbose\n",
            "config.yaml:2: logging.level: expected a string (one of DEBUG, INFO, WARNING, "
            "ERROR, CRITICAL, case-insensitive), got 'verbose'",
        ),
        (
            "server:\n  default_room: lobby\n",
            "config.yaml:2: server.default_room: expected a string (a room name: '#' "
            "followed by 1 to 32 of A-Z a-z 0-9 _ - .), got 'lobby'",
        ),
    ],
)
def test_out_of_range(in_tmp: Path, text: str, expected: str) -> None:
    assert str(load_error(in_tmp, text)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits: 5\n", "config.yaml:1: limits: expected a mapping of settings, got 5"),
        (
            "listen: {}\nlimits:\n  - 1\n",
            "config.yaml:3: limits: expected a mapping of settings, got a list",
        ),
        (
            "plugins:\n  rooms: hello\n",
            "config.yaml:2: plugins.rooms: expected a mapping of plugin settings, got 'hello'",
        ),
        (
            "plugins: [rooms]\n",
            "config.yaml:1: plugins: expected a mapping of plugin name to settings, got a list",
        ),
        (
            "plugin_dirs: plugins\n",
            "config.yaml:1: plugin_dirs: expected a list of folder names, got 'plugins'",
        ),
        (
            "plugin_dirs:\n  - ok\n  - 3\n",
            "config.yaml:3: plugin_dirs[1]: expected a non-empty string (a folder), got 3",
        ),
        (
            "- listen\n",
            "config.yaml:1: expected a mapping of sections at the top level, got a list",
        ),
    ],
)
def test_not_a_mapping(in_tmp: Path, text: str, expected: str) -> None:
    assert str(load_error(in_tmp, text)) == expected


def test_yaml_syntax_error_line(in_tmp: Path) -> None:
    err = load_error(in_tmp, "listen:\n  port: 1\n host: x\n")
    assert err.file == "config.yaml"
    assert err.line == 3
    assert err.key is None
    assert str(err).startswith("config.yaml:3: invalid YAML: expected <block end>")


def test_yaml_unclosed_quote(in_tmp: Path) -> None:
    err = load_error(in_tmp, 'server:\n  name: "chatd\n')
    assert str(err) == (
        "config.yaml:3: invalid YAML: found unexpected end of stream, "
        "while scanning a quoted scalar (line 2)"
    )


def test_yaml_control_character(in_tmp: Path) -> None:
    err = load_error(in_tmp, "server:\n  name: a\x01b\n")
    assert str(err) == "config.yaml:2: invalid YAML: character #x0001 is not allowed"


def test_multiple_documents_rejected(in_tmp: Path) -> None:
    err = load_error(in_tmp, "listen: {}\n---\nlimits: {}\n")
    assert err.line == 2
    assert "single document" in err.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "listen:\n  port: 1\n  host: x\n  port: 2\n",
            "config.yaml:4: listen.port: duplicate key (first defined on line 2)",
        ),
        (
            "listen: {}\nlimits: {}\nlisten: {}\n",
            "config.yaml:3: listen: duplicate key (first defined on line 1)",
        ),
        (
            "plugins:\n  rooms:\n    welcome: a\n    welcome: b\n",
            "config.yaml:4: plugins.rooms.welcome: duplicate key (first defined on line 3)",
        ),
    ],
)
def test_duplicate_key(in_tmp: Path, text: str, expected: str) -> None:
    assert str(load_error(in_tmp, text)) == expected


@pytest.mark.parametrize(
    "template",
    [
        'plugins:\n  evil:\n    x: !!python/object/apply:os.system ["touch {target}"]\n',
        'listen:\n  port: !!python/object/apply:os.system ["touch {target}"]\n',
        '!!python/object/apply:os.system ["touch {target}"]\n',
        'plugins:\n  evil: !!python/object/new:os.system ["touch {target}"]\n',
    ],
)
def test_python_tags_rejected_and_nothing_runs(in_tmp: Path, template: str) -> None:
    target = in_tmp / "pwned"
    err = load_error(in_tmp, template.replace("{target}", str(target)))
    assert err.line is not None
    assert "unsupported YAML tag '!!python/object" in err.message
    assert not target.exists()


def test_python_tag_error_names_key_and_line(in_tmp: Path) -> None:
    err = load_error(in_tmp, 'plugins:\n  evil:\n    x: !!python/object/apply:os.system ["ls"]\n')
    assert (err.file, err.key, err.line) == ("config.yaml", "plugins.evil.x", 3)


def test_custom_tag_rejected(in_tmp: Path) -> None:
    err = load_error(in_tmp, "listen:\n  host: !env HOST\n")
    assert str(err).startswith("config.yaml:2: listen.host: unsupported YAML tag '!env'")


def test_recursive_alias_rejected(in_tmp: Path) -> None:
    err = load_error(in_tmp, "plugins:\n  a: &x {b: [*x]}\n")
    assert str(err) == (
        "config.yaml:2: plugins.a.b[0]: recursive alias: this value contains itself"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert (err.file, err.key, err.line) == (str(path), None, None)
    assert str(err) == f"{path}: cannot read file: {os.strerror(errno.ENOENT)}"


def test_missing_file_relative_name(in_tmp: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("missing.yaml")
    assert str(info.value) == "missing.yaml: cannot read file: No such file or directory"


def test_file_not_utf8(in_tmp: Path) -> None:
    (in_tmp / "config.yaml").write_bytes(b"server:\n  name: \xff\n")
    with pytest.raises(ConfigError) as info:
        load_config("config.yaml")
    assert str(info.value).startswith("config.yaml: cannot read file: not valid UTF-8")


# -- environment variables ---------------------------------------------------------------


def test_env_var_expanded(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATD_OPER_PASSWORD", "s3cret")
    monkeypatch.setenv("CHATD_HOST", "0.0.0.0")
    config = load_text(
        in_tmp,
        "listen:\n  host: ${CHATD_HOST}\n"
        "plugins:\n  oper:\n    password: ${CHATD_OPER_PASSWORD}\n"
        "    banner: 'pw=${CHATD_OPER_PASSWORD}, host=${CHATD_HOST}, not ${1X} or $HOME'\n",
    )
    assert config.listen[0].host == "0.0.0.0"
    assert config.plugin_config("oper")["password"] == "s3cret"
    assert config.plugin_config("oper")["banner"] == "pw=s3cret, host=0.0.0.0, not ${1X} or $HOME"


def test_env_var_missing(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATD_OPER_PASSWORD", raising=False)
    err = load_error(in_tmp, "plugins:\n  oper:\n    password: ${CHATD_OPER_PASSWORD}\n")
    assert str(err) == (
        "config.yaml:3: plugins.oper.password: environment variable "
        "'CHATD_OPER_PASSWORD' is not set (referenced as ${CHATD_OPER_PASSWORD})"
    )
    assert (err.key, err.line) == ("plugins.oper.password", 3)


def test_env_var_does_not_turn_strings_into_numbers(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATD_PORT", "7000")
    err = load_error(in_tmp, "listen:\n  port: ${CHATD_PORT}\n")
    assert str(err) == (
        "config.yaml:2: listen.port: expected an integer between 0 and 65535, got '7000'"
    )


# -- ConfigError and the reference -------------------------------------------------------


def test_config_error_formatting() -> None:
    assert str(ConfigError("m", file="f.yaml", key="a.b", line=3)) == "f.yaml:3: a.b: m"
    assert str(ConfigError("m", file="f.yaml")) == "f.yaml: m"
    assert str(ConfigError("m", key="a.b")) == "a.b: m"
    assert str(ConfigError("m", line=3)) == "line 3: m"
    assert str(ConfigError(message="m")) == "m"


def test_config_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ConfigError("m", file="f.yaml", key="k", line=2)))
    assert (err.message, err.file, err.key, err.line) == ("m", "f.yaml", "k", 2)


def test_parse_config_errors_without_file() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("limits:\n  max_clients: 0\n")
    assert str(info.value) == (
        "line 2: limits.max_clients: expected an integer between 1 and 1048576, got 0"
    )


def test_reference_mentions_every_field() -> None:
    reference = config_reference()
    for section, cls in SECTIONS.items():
        assert f"## `{section}`" in reference
        for f in dataclasses.fields(cls):
            if f.metadata.get("rest"):
                continue  # the protocol's own keys: each protocol's section below
            assert f"`{section}.{f.name}`" in reference, f"{section}.{f.name}"
            assert " ".join(f.metadata["doc"].split()) in reference
    for spec in ProtocolRegistry():
        assert f"## `listen` with `protocol: {spec.name}`" in reference
        for name, setting in spec.option_specs.items():
            assert f"`listen.{name}`" in reference and " ".join(setting.doc.split()) in reference
    for name in ("plugin_dirs", "plugins"):
        assert f"## `{name}`" in reference


def test_reference_covers_every_config_field() -> None:
    """A new Config section must show up in the reference without touching the renderer."""
    reference = config_reference()
    for f in dataclasses.fields(Config):
        if f.name not in ("source", "locations"):
            assert f"## `{f.name}`" in reference


# -- issue 18, rule 3: every number within what the system accepts; names users see ------

#: Every numeric setting of the core, as (YAML section path, key).
NUMERIC = [
    (section, f.name)
    for section, cls in {**SECTIONS, "storage": StorageConfig}.items()
    for f in dataclasses.fields(cls)
    if f.type in ("int", "float")
] + [("listen.tls", "handshake_timeout_seconds")]


def _yaml_for(section: str, key: str, value: str) -> str:
    if section == "listen.tls":
        return f"listen:\n  tls:\n    {key}: {value}\n"
    if (section, key) == ("server", "node_number"):  # one of node_count's numbers
        return f"{section}:\n  {key}: {value}\n  node_count: 1024\n"
    return f"{section}:\n  {key}: {value}\n"


def test_every_numeric_setting_is_listed() -> None:
    """The parametrisation below must cover every number (a new one included)."""
    assert len(NUMERIC) >= 40
    assert ("net", "sndbuf_bytes") in NUMERIC and ("storage", "queue_max") in NUMERIC


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+400", "1" + "0" * 30])
@pytest.mark.parametrize(("section", "key"), NUMERIC, ids=[f"{s}.{k}" for s, k in NUMERIC])
def test_nan_inf_and_huge_numbers_are_refused_everywhere(
    in_tmp: Path, section: str, key: str, value: str
) -> None:
    err = load_error(in_tmp, _yaml_for(section, key, value))
    assert err.key == f"{section}.{key}" and err.line == (3 if "tls" in section else 2)
    assert err.message.startswith("expected "), err.message


@pytest.mark.parametrize(("section", "key"), NUMERIC, ids=[f"{s}.{k}" for s, k in NUMERIC])
def test_every_number_is_accepted_up_to_its_documented_bound_and_no_further(
    in_tmp: Path, section: str, key: str
) -> None:
    cls = {**SECTIONS, "storage": StorageConfig, "listen.tls": TlsConfig}[section]
    spec = dataclasses.fields(cls)[[f.name for f in dataclasses.fields(cls)].index(key)]
    high = spec.metadata["constraint"].le
    assert high is not None, f"{section}.{key} has no upper bound"
    whole = spec.type == "int"
    top = str(int(high)) if whole else repr(float(high))
    if section != "listen.tls":  # a TLS section needs certificates to load at all
        config = load_text(in_tmp, _yaml_for(section, key, top))
        values = config.listen[0] if section == "listen" else getattr(config, section)
        assert getattr(values, key) == high
    past = str(int(high) + 1) if whole else repr(float(high) * 1.5)
    err = load_error(in_tmp, _yaml_for(section, key, past))
    assert err.key == f"{section}.{key}" and "expected" in err.message


def test_a_number_declared_without_an_upper_bound_breaks_the_import() -> None:
    """The schema refuses a new numeric setting that does not say its ceiling."""
    from chatd.config_rules import field_specs, setting

    @dataclasses.dataclass(frozen=True)
    class Careless:
        timeout_seconds: float = setting(1.0, "A timeout with no ceiling.", gt=0)

    with pytest.raises(TypeError, match="needs an upper bound"):
        field_specs(Careless)


@pytest.mark.parametrize(
    "char",
    ["\u202e", "\u2066", "\u200e", "\u200b", "\u200d", "\u2060", "\u00ad", "\ufeff",
     "\u3164", "\u115f", "\u2800", "\u034f", "\ue000", "\U000e0041", "\u0085", "\u2028",
     "\x1b"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_server_name_refuses_invisible_bidi_and_control_characters(
    in_tmp: Path, char: str
) -> None:
    escaped = char.encode("unicode_escape").decode("ascii")
    err = load_error(in_tmp, f'server:\n  name: "chat{escaped}d"\n')
    assert (err.key, err.line) == ("server.name", 2)
    assert err.message.startswith(f"holds U+{ord(char):04X} "), err.message
    assert "control, invisible and bidi characters are not allowed" in err.message


@pytest.mark.parametrize("name", ["chät", "チャット", "chat 🙂", "Ünïcödé-Server", "a b"])
def test_server_name_keeps_every_visible_script(in_tmp: Path, name: str) -> None:
    assert load_text(in_tmp, f'server:\n  name: "{name}"\n').server.name == name


def test_an_error_shows_a_key_with_invisible_characters_escaped() -> None:
    err = ConfigError("unknown key", file="c.yaml", key="plugins.x.#a\u202eb", line=2)
    assert str(err) == "c.yaml:2: plugins.x.#a\\u202eb: unknown key"


def test_check_number_and_check_text_give_plugins_the_same_rules() -> None:
    config = parse_config("plugins:\n  mine:\n    delay: 3\n")
    assert config.check_number("plugins.mine.delay", 3, gt=0, le=60) == 3.0
    assert config.check_number("plugins.mine.n", 7, ge=0, le=10, whole=True) == 7
    for bad in (float("nan"), float("inf"), 10**30, True, "3", 61):
        with pytest.raises(ConfigError) as info:
            config.check_number("plugins.mine.delay", bad, gt=0, le=60)
        assert str(info.value).startswith("line 3: plugins.mine.delay: expected a number > 0")
    with pytest.raises(ConfigError, match="expected an integer"):
        config.check_number("plugins.mine.n", 2.5, ge=0, le=10, whole=True)
    family = "hi 👨\u200d👩\u200d👧"  # joiners belong inside emoji in running text
    assert config.check_text("plugins.mine.hello", family) == family
    with pytest.raises(ConfigError, match="U\\+200D"):
        config.check_text("plugins.mine.room", "#a\u200db", kind="name")
    with pytest.raises(ConfigError, match="U\\+202E"):
        config.check_text("plugins.mine.hello", "hi \u202e")
    with pytest.raises(ConfigError, match="expected a string"):
        config.check_text("plugins.mine.hello", 5)
