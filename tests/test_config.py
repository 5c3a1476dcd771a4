"""Profiles: one table, read from FMNIST_PROFILE once per process."""

import pytest

from fmnist_lib import config


def test_profiles_differ_only_in_sizes():
    quick, full = config.profile_named("quick"), config.profile_named("full")
    assert quick.train_size < 60000 and full.train_size is None
    assert quick.validation_size == full.validation_size


def test_profile_is_read_from_the_environment(monkeypatch):
    config.get_profile.cache_clear()
    try:
        monkeypatch.setenv("FMNIST_PROFILE", "Quick")
        assert config.get_profile().name == "quick"
        monkeypatch.delenv("FMNIST_PROFILE")
        assert config.get_profile().name == "quick", "read once per process"
        config.get_profile.cache_clear()
        assert config.get_profile().name == "full", "full by default"
    finally:
        config.get_profile.cache_clear()


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(config.ConfigError, match="must be 'quick' or 'full'"):
        config.profile_named("fast")
