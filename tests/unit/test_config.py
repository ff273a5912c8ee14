from pathlib import Path

import pytest

from runequeue import QueueConfig
from runequeue.config import imports_from_env
from runequeue.errors import ConfigError


def test_defaults_use_the_sync_driver() -> None:
    config = QueueConfig.from_env({}, env_file=None)
    assert (config.driver, config.queue_name, config.retry_after_s) == ("sync", "default", 30.0)


def test_environment_names_are_read() -> None:
    config = QueueConfig.from_env(
        {
            "QUEUE_CONNECTION": "redis",
            "REDIS_URL": "redis://example:6390/2",
            "QUEUE_NAME": "emails",
            "QUEUE_RETRY_AFTER": "90",
            "DATABASE_URL": "sqlite:///x.db",
        },
        env_file=None,
    )
    assert config.driver == "redis"
    assert config.redis_url == "redis://example:6390/2"
    assert config.queue_name == "emails"
    assert config.retry_after_s == 90.0
    assert config.database_url == "sqlite:///x.db"


def test_dotenv_fills_what_the_environment_lacks(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("QUEUE_DRIVER=redis\nQUEUE_NAME=from-file\n")
    config = QueueConfig.from_env({"QUEUE_NAME": "from-env"}, env_file=env_file)
    assert (config.driver, config.queue_name) == ("redis", "from-env")


def test_explicit_overrides_win() -> None:
    config = QueueConfig.from_env({"QUEUE_DRIVER": "redis"}, env_file=None, driver="sync")
    assert config.driver == "sync"


@pytest.mark.parametrize(
    "environ",
    [{"QUEUE_DRIVER": "rabbit"}, {"QUEUE_RETRY_AFTER": "soon"}, {"QUEUE_RETRY_AFTER": "0"}],
)
def test_bad_values_are_config_errors(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        QueueConfig.from_env(environ, env_file=None)


def test_repr_hides_passwords_and_signing_keys() -> None:
    config = QueueConfig(
        redis_url="redis://:hunter2@cache:6379/0",
        database_url="postgresql://app:s3cret@db/app",
        signing_keys=(("k1", "topsecret"),),
    )
    shown = repr(config)
    assert "hunter2" not in shown and "s3cret" not in shown and "topsecret" not in shown
    assert "redis://:***@cache:6379/0" in shown and "postgresql://app:***@db/app" in shown


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 1048576), ("1MiB", 1048576), ("1MB", 1_000_000), ("512 KiB", 524288)],
)
def test_payload_limit_takes_units(text: str, size: int) -> None:
    config = QueueConfig.from_env({"QUEUE_MAX_PAYLOAD_BYTES": text}, env_file=None)
    assert config.max_payload_bytes == size


def test_a_bad_payload_limit_says_bytes_not_seconds() -> None:
    with pytest.raises(ConfigError, match="size in bytes") as raised:
        QueueConfig.from_env({"QUEUE_MAX_PAYLOAD_BYTES": "lots"}, env_file=None)
    assert "seconds" not in str(raised.value)


def test_rune_imports_is_read_from_dotenv_too(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RUNE_IMPORTS=app.jobs, billing.jobs\n")
    assert imports_from_env({}, env_file) == ["app.jobs", "billing.jobs"]
    assert imports_from_env({"RUNE_IMPORTS": "other.jobs"}, env_file) == ["other.jobs"]


def test_the_package_has_a_version_and_exports_its_errors() -> None:
    import runequeue

    assert runequeue.__version__[0].isdigit()
    for name in ("MissingTable", "FailedStoreError", "BadSignature", "DatabaseUnavailable"):
        assert issubclass(getattr(runequeue, name), runequeue.RuneQueueError)


def test_an_unparsable_database_url_never_shows_its_password() -> None:
    from runequeue.db_engine import normalized_url, redacted

    url = "postgresql://app:s3cret@db:notaport/app"
    assert "s3cret" not in redacted(url)
    with pytest.raises(ConfigError) as raised:
        normalized_url(url)
    assert "s3cret" not in str(raised.value)
