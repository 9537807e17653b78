"""The one cache of derived files in the private home: its rules, tried against what could break them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from file_times import restore_old_times

from workflow_compiler import home_cache
from workflow_compiler.home_cache import cached_in_home, file_identity


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o700)
    yield tmp_path / "home"


def _cached(calls: list[str], key: bytes = b"k", value: str = "v") -> str:
    def make() -> str:
        calls.append(value)
        return value
    return cached_in_home("thing", key, make, dump=str.encode, load=lambda data: data.decode("ascii"), suffix=".txt")


def test_a_value_is_made_once_then_read_private_and_atomically(home: Path) -> None:
    calls: list[str] = []
    old = os.umask(0)
    try:
        assert _cached(calls) == "v" and _cached(calls) == "v"
    finally:
        os.umask(old)
    assert calls == ["v"]
    (cached,) = (home / "cache").iterdir()  # no temporary file left beside it
    assert cached.name.startswith("thing-") and cached.name.endswith(".txt")
    assert cached.stat().st_mode & 0o777 == 0o600 and (home / "cache").stat().st_mode & 0o777 == 0o700


def test_another_key_is_another_file(home: Path) -> None:
    calls: list[str] = []
    _cached(calls, b"one", "1")
    assert _cached(calls, b"two", "2") == "2" and calls == ["1", "2"]
    assert len(list((home / "cache").iterdir())) == 2


def test_a_copy_that_does_not_load_is_made_again_and_replaced(home: Path) -> None:
    calls: list[str] = []
    _cached(calls)
    (cached,) = (home / "cache").iterdir()
    cached.write_bytes(b"\xff\xfe not ascii")
    assert _cached(calls) == "v" and calls == ["v", "v"]
    assert cached.read_bytes() == b"v"


def _missing_home(home: Path) -> None:
    home.rmdir()


def _shared_home(home: Path) -> None:
    home.chmod(0o777)


def _shared_cache(home: Path) -> None:
    (home / "cache").mkdir(mode=0o777)
    (home / "cache").chmod(0o777)


def _linked_cache(home: Path) -> None:
    elsewhere = home.parent / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (home / "cache").symlink_to(elsewhere)


@pytest.mark.parametrize("spoil", [_missing_home, _shared_home, _shared_cache, _linked_cache],
                         ids=["missing home", "home others can write", "cache others can write", "cache is a link"])
def test_no_cache_outside_a_private_home_and_the_value_is_still_made(spoil: Callable[[Path], None], home: Path) -> None:
    spoil(home)
    before = sorted(p.name for p in home.parent.rglob("*"))
    calls: list[str] = []
    assert _cached(calls) == "v" and _cached(calls) == "v"
    assert calls == ["v", "v"]  # nothing was read from there
    assert sorted(p.name for p in home.parent.rglob("*")) == before  # nor written, nor the home created


def test_a_cached_file_that_is_a_link_is_not_followed(home: Path) -> None:
    calls: list[str] = []
    _cached(calls)
    (cached,) = (home / "cache").iterdir()
    planted = home.parent / "planted.txt"
    planted.write_text("planted")
    cached.unlink()
    cached.symlink_to(planted)
    assert _cached(calls) == "v" and calls == ["v", "v"]
    assert planted.read_text() == "planted" and not cached.is_symlink()


def test_a_file_identity_changes_with_its_content_even_with_its_old_times(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "schema.yaml"
    path.write_text("kind: A\n")
    assert file_identity(path) is None  # just written: not trusted yet
    monkeypatch.setattr(home_cache, "RACY_SECONDS", 0.0)
    first = file_identity(path)
    assert first is not None and file_identity(path) == first
    times = os.stat(path)
    path.write_text("kind: B\n")  # same size
    restore_old_times(path, times)  # and the old mtime: ctime still moves
    assert file_identity(path) not in (None, first)
