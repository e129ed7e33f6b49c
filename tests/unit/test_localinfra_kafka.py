"""The local broker's configuration, rendered without starting anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.devtools.infra.cluster import LocalKafka
from broker.devtools.infra.kafka import major_version, new_cluster_id, render_properties, server_properties
from broker.domain.faults import Failure
from broker.settings import BROKERS_FILE, Settings


def parse(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def test_combined_mode_on_loopback_with_the_configured_ports() -> None:
    settings = Settings(kafka_port=29092, kafka_controller_port=29093)
    props = parse(render_properties(server_properties(settings, node_id=1, data_dir=Path("/state/kafka/data"))))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == "/state/kafka/data"


def test_internal_topics_fit_one_node_on_two_cores() -> None:
    props = server_properties(Settings(), node_id=1, data_dir=Path("/d"))
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "offsets.topic.num.partitions",
                "transaction.state.log.num.partitions", "default.replication.factor", "min.insync.replicas"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_three_nodes_form_one_quorum_and_replicate_everything_three_times() -> None:
    settings = Settings(kafka_brokers=3, kafka_port=29092, kafka_controller_port=29093)
    props = [server_properties(settings, node_id=node, data_dir=Path(f"/d{node}")) for node in (1, 2, 3)]
    voters = "1@127.0.0.1:29093,2@127.0.0.1:29095,3@127.0.0.1:29097"
    assert [p["controller.quorum.voters"] for p in props] == [voters] * 3
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert props[2]["listeners"] == "PLAINTEXT://127.0.0.1:29096,CONTROLLER://127.0.0.1:29097"
    for key, value in {"default.replication.factor": "3", "offsets.topic.replication.factor": "3",
                       "transaction.state.log.replication.factor": "3", "min.insync.replicas": "2",
                       "transaction.state.log.min.isr": "2", "unclean.leader.election.enable": "false"}.items():
        assert {p[key] for p in props} == {value}, key


def test_a_node_can_advertise_another_address_than_it_listens_on() -> None:
    settings = Settings(kafka_port=29092, kafka_controller_port=29093)
    props = server_properties(settings, node_id=1, data_dir=Path("/d"), advertised="127.0.0.1:40000")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:40000"
    assert props["listeners"].startswith("PLAINTEXT://127.0.0.1:29092,")
    local = LocalKafka(settings, advertised=["127.0.0.1:40000"])
    assert local.address == "127.0.0.1:40000"
    with pytest.raises(ValueError):
        LocalKafka(settings, advertised=["127.0.0.1:40000", "127.0.0.1:40001"])


def test_settings_take_the_broker_count_recorded_under_the_state_dir(tmp_path: Path) -> None:
    local = {"state_dir": tmp_path, "kafka_bootstrap": None}
    assert Settings(**local).kafka_brokers == 1
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / BROKERS_FILE).write_text("3\n")
    recorded = Settings(**local, kafka_port=29092)
    assert recorded.kafka_brokers == 3
    assert recorded.kafka_address == "127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096"
    assert (recorded.replication_factor, recorded.min_insync_replicas) == (3, 2)
    assert Settings(**local, kafka_brokers=1).kafka_address == "127.0.0.1:19092"
    assert Settings(state_dir=tmp_path, kafka_bootstrap="kafka:9092").kafka_brokers == 1  # the record is local
    chosen = Settings(**local, topic_replication_factor=2, topic_min_insync_replicas=2)
    assert (chosen.replication_factor, chosen.min_insync_replicas) == (2, 2)


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
    assert local.release.libs_dir == Path.home() / ".cache" / "ejx" / "kafka-4.3.1" / "libs"
    assert local.root == tmp_path.resolve() / "kafka"


async def test_a_cluster_whose_nodes_are_still_registering_is_waited_for_not_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three JVMs on two cores register one by one: "only 2 brokers registered" means wait, not fail."""
    from aiokafka.errors import InvalidReplicationFactorError

    from broker.devtools.infra import cluster

    local = LocalKafka(Settings(state_dir=tmp_path, kafka_brokers=3))
    for node in local.nodes:
        monkeypatch.setattr(node, "pid", lambda: 4242)
    creations: list[int] = []

    async def ensure_topics(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        creations.append(kwargs["replication_factor"])
        if len(creations) < 3:
            raise InvalidReplicationFactorError("only 2 broker(s) are registered")

    async def nothing(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        return None

    monkeypatch.setattr(cluster.kafka, "wait_ready", nothing)
    monkeypatch.setattr(cluster.kafka, "ensure_topics", ensure_topics)
    monkeypatch.setattr(cluster.kafka, "delete_topics", nothing)
    monkeypatch.setattr(cluster.asyncio, "sleep", nothing)

    await local._until_usable(deadline=cluster.time.monotonic() + 30)

    assert creations == [3, 3, 3]
