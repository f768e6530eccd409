"""``LoadSpec``: the settings of a run, checked once when it is made."""

from __future__ import annotations

import argparse
import dataclasses
import inspect

import pytest

from rawepoll.tools.loadgen import run_load
from rawepoll.tools.loadgen.cli import add_arguments
from rawepoll.tools.loadgen.spec import LoadSpec

pytestmark = pytest.mark.timeout(60)


def test_defaults_are_those_of_rawepoll_bench() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    spec = LoadSpec()
    for name in ("host", "port", "unix", "conns", "size", "pipeline", "procs", "timeout"):
        assert getattr(spec, name) == getattr(args, name), name
    assert spec.duration == 10.0  # the command's default when neither --duration nor --messages
    assert spec.messages is None


def test_sequences_are_kept_as_tuples() -> None:
    spec = LoadSpec(source_addrs=["127.0.0.2", "127.0.0.3"], cpus=[0])
    assert spec.source_addrs == ("127.0.0.2", "127.0.0.3")
    assert spec.cpus == (0,)
    assert hash(spec) == hash(LoadSpec(source_addrs=("127.0.0.2", "127.0.0.3"), cpus=(0,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.conns = 5  # type: ignore[misc]


def test_an_unknown_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        LoadSpec(connections=5)  # type: ignore[call-arg]


def test_the_first_wrong_setting_is_named() -> None:
    """The checks run in the order of the options: what to change comes first."""
    with pytest.raises(ValueError, match="--conns must be at least 1"):
        LoadSpec(conns=0, size=0)
    with pytest.raises(ValueError, match="--source-addrs is for TCP"):
        LoadSpec(unix="/tmp/x", source_addrs=["127.0.0.2"])


def test_run_load_takes_the_spec_settings() -> None:
    assert "progress" in inspect.signature(run_load).parameters
    with pytest.raises(TypeError):
        run_load(connections=5)
