"""The core's knowledge of domain files, as the `hakobu` command and the tests use it:
file names taken apart, a domain's files listed by kind, the domains present, hugetlbfs mounts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DOMAIN

import hakobu
from hakobu import _core


def test_file_names_are_taken_apart_by_kind() -> None:
    assert _core.parse_file_name("hakobu:d1:registry") == ("d1", "registry", "")
    assert _core.parse_file_name("hakobu:d1:heap") == ("d1", "heap", "")
    assert _core.parse_file_name("hakobu:d1:q:frames") == ("d1", "queue", "frames")
    assert _core.parse_file_name("hakobu:d1:new:frames:00ff") == ("d1", "new_queue", "frames")
    assert _core.parse_file_name("hakobu:d1:topic:x") == ("d1", "other", "topic:x")
    assert _core.parse_file_name("hakobu:d1:q:a:b") == ("d1", "other", "q:a:b"), "not a queue name"
    for foreign in (
        "",
        "hakobu:",
        "hakobu:d1",
        "hakobu::heap",
        "hakobu:.d:heap",
        "psm_1",
        "x:hakobu:d1:heap",
    ):
        assert _core.parse_file_name(foreign) is None, foreign
    assert _core.FILE_NAME_PREFIX == "hakobu:"
    assert _core.file_prefix("d1").startswith(_core.FILE_NAME_PREFIX)


def test_a_domains_files_are_listed_by_kind_queues_first_registry_last(name: str) -> None:
    queue = hakobu.Queue(name, create=True)
    try:
        files = _core.domain_files(DOMAIN)
        kinds = [kind for _path, kind, _name in files]
        huge = _core.domain_stats(DOMAIN)["huge_pages"]
        assert kinds[-2:] == ["heap", "registry"]
        assert kinds.count("huge_heap") == (1 if huge else 0)
        queues = [(path, queue_name) for path, kind, queue_name in files if kind == "queue"]
        assert (f"/dev/shm/hakobu:{DOMAIN}:q:{name}", name) in queues
        assert kinds.index("queue") == 0
        on_disk = {f"/dev/shm/{n}" for n in os.listdir("/dev/shm") if n.startswith(_core.file_prefix(DOMAIN))}
        assert on_disk == {path for path, kind, _ in files if kind != "huge_heap"}
        assert DOMAIN in _core.domain_names()
    finally:
        queue.close()


@pytest.fixture
def stray_domain() -> Iterator[str]:
    """A domain of left-over files nobody attaches to (a creator died while building a queue...)."""
    domain = f"{DOMAIN}-stray"
    paths = [
        Path(f"/dev/shm/hakobu:{domain}:{rest}") for rest in ("new:frames:0123", "topic:x", "q:b", "q:a")
    ]
    for path in paths:
        path.touch()
    yield domain
    for path in paths:
        path.unlink(missing_ok=True)


def test_left_over_files_are_listed_without_attaching(stray_domain: str) -> None:
    files = _core.domain_files(stray_domain)
    assert [(kind, name) for _path, kind, name in files] == [
        ("queue", "a"),
        ("queue", "b"),
        ("new_queue", "frames"),
        ("other", "topic:x"),
    ]
    assert stray_domain in _core.domain_names()
    assert _core.domain_names() == sorted(_core.domain_names())
    assert not Path(f"/dev/shm/hakobu:{stray_domain}:registry").exists(), "listing attached to the domain"


def test_invalid_domain_names_have_no_files() -> None:
    assert _core.domain_files("") == []
    assert _core.domain_files("a:b") == []
    assert _core.domain_files("../x") == []


def test_hugetlbfs_mounts_and_the_shm_directory() -> None:
    for path, page_size in _core.hugetlbfs_mounts():
        assert os.path.ismount(path), path
        assert page_size > 0 and page_size & (page_size - 1) == 0, page_size
    assert _core.shm_directory() == "/dev/shm"
