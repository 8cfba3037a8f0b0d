"""Ray's Prometheus discovery file: its content from ray.nodes(), and how it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hookcast.cluster.prometheus_discovery import (
    FILE_NAME,
    discovery_content,
    write_discovery_file,
)


def _node(address: str, export_port: int, alive: bool = True) -> dict:
    # The keys ray.nodes() answers with, and a metrics agent port that must not be used.
    return {
        "NodeManagerAddress": address,
        "MetricsExportPort": export_port,
        "MetricsAgentPort": 50001,
        "alive": alive,
    }


def test_content_lists_each_live_nodes_metrics_export_port_as_ray_writes_it() -> None:
    nodes = [_node("127.0.0.1", 41809), _node("10.0.0.2", 8080), _node("10.0.0.3", 8080, False)]
    assert discovery_content(nodes) == [
        {"labels": {"job": "ray"}, "targets": ["127.0.0.1:41809", "10.0.0.2:8080"]}
    ]


def test_content_brackets_ipv6_and_skips_a_node_without_an_export_port() -> None:
    nodes = [_node("fd00::5", 9100), _node("10.0.0.4", 0)]
    assert discovery_content(nodes) == [{"labels": {"job": "ray"}, "targets": ["[fd00::5]:9100"]}]


def test_content_is_one_empty_group_when_no_node_is_alive() -> None:
    assert discovery_content([_node("127.0.0.1", 8080, alive=False)]) == [
        {"labels": {"job": "ray"}, "targets": []}
    ]


@pytest.fixture
def ray_dirs(tmp_path: Path) -> tuple[Path, Path]:
    temp_dir = tmp_path / "ray"
    session = temp_dir / "session_2026-12-03_11-35-23_116753_5900"
    session.mkdir(parents=True)
    return session, temp_dir


def test_writes_the_session_file_and_links_the_documented_path_to_it(ray_dirs) -> None:
    session, temp_dir = ray_dirs
    content = discovery_content([_node("127.0.0.1", 41809)])

    written = write_discovery_file(content, session, temp_dir)

    assert written == session / FILE_NAME
    assert json.loads(written.read_text()) == content
    legacy = temp_dir / FILE_NAME
    assert legacy.is_symlink() and os.readlink(legacy) == str(written)
    assert json.loads(legacy.read_text()) == content
    assert sorted(p.name for p in temp_dir.iterdir()) == [FILE_NAME, session.name]
    assert [p.name for p in session.iterdir()] == [FILE_NAME]


def test_an_older_sessions_file_and_link_are_replaced(ray_dirs) -> None:
    session, temp_dir = ray_dirs
    older = temp_dir / "session_2026-12-01_09-00-00_000001_1234"
    older.mkdir()
    write_discovery_file(discovery_content([_node("127.0.0.1", 1111)]), older, temp_dir)

    write_discovery_file(discovery_content([_node("127.0.0.1", 2222)]), session, temp_dir)

    legacy = temp_dir / FILE_NAME
    assert os.readlink(legacy) == str(session / FILE_NAME)
    assert json.loads(legacy.read_text())[0]["targets"] == ["127.0.0.1:2222"]
    # The older session keeps its own file, as Ray leaves it.
    assert json.loads((older / FILE_NAME).read_text())[0]["targets"] == ["127.0.0.1:1111"]


def test_a_plain_file_at_the_documented_path_is_replaced_by_the_link(ray_dirs) -> None:
    session, temp_dir = ray_dirs
    (temp_dir / FILE_NAME).write_text('[{"labels": {"job": "ray"}, "targets": ["old:1"]}]')

    write_discovery_file(discovery_content([_node("127.0.0.1", 3333)]), session, temp_dir)

    assert (temp_dir / FILE_NAME).is_symlink()
    assert json.loads((temp_dir / FILE_NAME).read_text())[0]["targets"] == ["127.0.0.1:3333"]


def test_a_copy_takes_the_links_place_where_symlinks_are_refused(ray_dirs, monkeypatch) -> None:
    session, temp_dir = ray_dirs

    def refuse(self: Path, target: Path) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    content = discovery_content([_node("127.0.0.1", 4444)])

    write_discovery_file(content, session, temp_dir)

    legacy = temp_dir / FILE_NAME
    assert not legacy.is_symlink()
    assert json.loads(legacy.read_text()) == content
    assert sorted(p.name for p in temp_dir.iterdir()) == [FILE_NAME, session.name]


def test_a_session_dir_that_is_the_temp_dir_gets_the_file_once(tmp_path: Path) -> None:
    content = discovery_content([_node("127.0.0.1", 5555)])

    written = write_discovery_file(content, tmp_path, tmp_path)

    assert not written.is_symlink()
    assert json.loads(written.read_text()) == content
