from pathlib import Path

import pytest

from runequeue import QueueConfig
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
