"""Settings from a .env file: the process environment wins over the file, the file over the
defaults; .env.example names every setting with its true default."""

import re
from pathlib import Path

import pytest

from tornado_app.runtime.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / ".env.example"
LINE = re.compile(r"^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$")


def _example_settings() -> dict[str, str]:
    found = {}
    for line in EXAMPLE.read_text().splitlines():
        match = LINE.match(line)
        if match:
            assert match.group(1) not in found, f"{match.group(1)} is listed twice"
            found[match.group(1)] = match.group(2)
    return found


@pytest.fixture
def clean_env(monkeypatch):
    """No setting from the process environment (nor a developer's .env) leaks into these tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.delenv("ENV_FILE", raising=False)
    return monkeypatch


def test_the_example_names_every_setting_and_nothing_else():
    assert set(_example_settings()) == {name.upper() for name in Settings.model_fields}


@pytest.mark.parametrize("name", sorted(name.upper() for name in Settings.model_fields))
def test_the_example_shows_each_settings_default(clean_env, tmp_path, name):
    value = _example_settings().get(name)
    assert value is not None, f"{name} is missing from .env.example"
    env_file = tmp_path / ".env"
    env_file.write_text(f"{name}={value}\n")
    from_example = Settings(_env_file=env_file)
    default = Settings(_env_file=None)
    assert getattr(from_example, name.lower()) == getattr(default, name.lower())


def test_a_dotenv_value_beats_the_default(clean_env, tmp_path):
    (tmp_path / ".env").write_text("PORT=9123\nLOG_LEVEL=DEBUG\n")
    clean_env.chdir(tmp_path)
    settings = load_settings()
    assert settings.port == 9123 and settings.log_level == "DEBUG"


def test_the_process_environment_beats_the_dotenv_file(clean_env, tmp_path):
    (tmp_path / ".env").write_text("PORT=9123\nLOG_LEVEL=DEBUG\n")
    clean_env.chdir(tmp_path)
    clean_env.setenv("PORT", "9124")
    settings = load_settings()
    assert settings.port == 9124
    assert settings.log_level == "DEBUG"


def test_without_either_the_default_holds(clean_env, tmp_path):
    clean_env.chdir(tmp_path)
    assert load_settings().port == 8888


def test_env_file_names_another_file_and_empty_reads_none(clean_env, tmp_path):
    (tmp_path / ".env").write_text("PORT=9123\n")
    (tmp_path / "other.env").write_text("PORT=9125\n")
    clean_env.chdir(tmp_path)
    clean_env.setenv("ENV_FILE", "other.env")
    assert load_settings().port == 9125
    clean_env.setenv("ENV_FILE", "")
    assert load_settings().port == 8888


def test_a_bad_value_in_the_dotenv_file_is_named(clean_env, tmp_path):
    (tmp_path / ".env").write_text("PORT=eighty\n")
    clean_env.chdir(tmp_path)
    with pytest.raises(SettingsError, match="PORT"):
        load_settings()


def test_an_empty_value_is_the_default(clean_env, tmp_path):
    (tmp_path / ".env").write_text("MAX_CONNECTIONS=\nPORT=\n")
    clean_env.chdir(tmp_path)
    settings = load_settings()
    assert settings.port == 8888
    assert settings.max_connections == Settings(_env_file=None).max_connections
