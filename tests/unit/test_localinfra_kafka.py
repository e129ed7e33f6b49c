"""The local broker's configuration, rendered without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.devtools.infra.kafka import (
    LocalKafka,
    major_version,
    new_cluster_id,
    render_properties,
    server_properties,
)
from broker.domain.faults import Failure
from broker.settings import Settings


def parse(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_combined_mode_on_loopback_with_the_configured_ports() -> None:
    settings = Settings(kafka_port=29092, kafka_controller_port=29093)
    props = parse(render_properties(server_properties(settings, data_dir=Path("/state/kafka/data"))))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == "/state/kafka/data"


def test_internal_topics_fit_one_node_on_two_cores() -> None:
    props = server_properties(Settings(), data_dir=Path("/d"))
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "offsets.topic.num.partitions",
                "transaction.state.log.num.partitions", "default.replication.factor", "min.insync.replicas"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_backslashes_in_paths_survive_java_properties_escaping() -> None:
    props = parse(render_properties({"log.dirs": r"C:\kafka"}))
    assert props["log.dirs"] == r"C:\\kafka"


def test_cluster_ids_are_22_base64url_chars_never_starting_with_dash() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(len(cluster_id) == 22 and not cluster_id.startswith("-") for cluster_id in ids)


@pytest.mark.parametrize("version", ["3.9", "2.8.2", "5.0.0", "4.x.1", ""])
def test_unsupported_versions_are_refused_at_construction(version: str) -> None:
    with pytest.raises(Failure):
        major_version(version)
    with pytest.raises(Failure):
        LocalKafka(Settings(kafka_version=version or "0"))


def test_jar_cache_is_per_version_outside_the_state_dir(tmp_path: Path) -> None:
    local = LocalKafka(Settings(kafka_version="4.3.1", state_dir=tmp_path))
    assert local.libs_dir == Path.home() / ".cache" / "ejx" / "kafka-4.3.1" / "libs"
    assert local.root == tmp_path.resolve() / "kafka"
