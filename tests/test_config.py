"""config.yml: validated at start-up, errors name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_the_shipped_config_is_valid_and_paths_resolve_next_to_it() -> None:
    config = load_config(REPO / "config.yml")
    assert config.knowledge.path == REPO / "knowledge"
    assert config.index.path == REPO / ".data" / "chroma"
    assert config.eval.cases == REPO / "evals" / "demo-cases.csv"


def test_unknown_key_names_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("knowledge:\n  path: kb\nanswering:\n  faq_treshold: 0.5\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:4: answering.faq_treshold: unknown key"


def test_bad_values_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("answering:\n  min_margin: 1.5\nserver:\n  port: http\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{path}:2: answering.min_margin: Input should be less than or equal to 1")
    assert "(got 1.5)" in lines[0]
    assert lines[1].startswith(f"{path}:4: server.port: ") and "'http'" in lines[1]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("server:\n  port: 80\n  host: [oops\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d: invalid YAML"):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yml")


def test_values_that_would_fail_later_are_refused_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "index:\n"
        "  collection: Support KB (EU)\n"  # Chroma refuses spaces and brackets
        "web:\n"
        "  allowed_origins: [https://shop.example.com/help]\n"  # a page, not an origin: never matches
        "messages:\n"
        '  too_long: "Keep it short ({limit} max), JSON like {\\"text\\": ...} is fine"\n'  # braces read as a field
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith(f"{path}:2: index.collection: String should match pattern")
    assert lines[1].startswith(f"{path}:4: web.allowed_origins: Value error, 'https://shop.example.com/help'")
    assert lines[2].startswith(f"{path}:6: messages.too_long: Value error, may use only the placeholders")


def test_origins_are_compared_as_browsers_send_them(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("web:\n  allowed_origins: ['https://Shop.Example.com/', '*']\n")
    assert load_config(path).web.allowed_origins == ["https://shop.example.com", "*"]


def test_passwords_in_server_urls_are_refused_and_named_by_their_variable(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "store:\n"
        "  url: postgresql://bot:hunter2@db.internal:5432/support\n"
        "coordination:\n"
        "  redis_url: redis://:hunter2@cache.internal:6379/0\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    lines = str(err.value).splitlines()
    assert (
        "store.url: Value error, no password in store.url: set it in the environment, SUPPORTBOT_DATABASE_PASSWORD"
        in lines[0]
    )
    assert "SUPPORTBOT_REDIS_PASSWORD" in lines[1]
    assert "hunter2" not in str(err.value)  # the secret is not repeated in the error


def test_a_store_url_must_name_a_postgresql_database(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("store:\n  url: mysql://db.internal/support\n")
    with pytest.raises(ConfigError, match="is not a URL like postgresql://user@host:5432/dbname"):
        load_config(path)
    path.write_text("store:\n  url: postgresql://bot@db.internal:5432/support\n  pool_size: 4\n")
    assert load_config(path).store.location == "postgresql://bot@db.internal:5432/support"
