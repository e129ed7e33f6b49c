"""LocalKafka's lifecycle with a second broker of its own (temporary state dir, free ports)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.devtools.infra.cluster import LocalKafka
from broker.domain.faults import Failure
from broker.settings import Settings

pytestmark = pytest.mark.kafka


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def java_running(pid: int) -> bool:
    cmdline = Path(f"/proc/{pid}/cmdline")
    return cmdline.exists() and b"kafka.Kafka" in cmdline.read_bytes()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalKafka]:
    port, controller_port = free_ports(2)
    broker = LocalKafka(Settings(state_dir=tmp_path, kafka_port=port, kafka_controller_port=controller_port))
    yield broker
    broker.down()


def test_up_twice_is_one_broker_and_down_leaves_no_process(local: LocalKafka) -> None:
    address = local.up()
    (node,) = local.nodes
    pid = int(node.pid_file.read_text())
    assert local.is_up()
    assert local.up() == address == local.address
    assert int(node.pid_file.read_text()) == pid
    assert "Kafka" in (node.logs_dir / "server.log").read_text()

    local.down()
    assert not java_running(pid)
    assert not local.is_up()
    local.down()


def test_busy_port_is_a_failure_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        (controller_port,) = free_ports(1)
        local = LocalKafka(Settings(state_dir=tmp_path, kafka_port=port, kafka_controller_port=controller_port))
        with pytest.raises(Failure, match=str(port)):
            local.up()
    assert not local.nodes[0].pid_file.exists()


def test_a_broker_that_dies_at_start_is_a_failure_with_its_log_tail(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    local = LocalKafka(Settings(state_dir=tmp_path, kafka_port=port, kafka_controller_port=controller_port))
    # Storage of another node: the broker refuses it and exits.
    (node,) = local.nodes
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "meta.properties").write_text("version=1\ncluster.id=elsewhere\nnode.id=7\n")
    with pytest.raises(Failure) as raised:
        local.up()
    assert "meta.properties" in raised.value.description
    assert not local.is_up()
    assert not node.pid_file.exists()


def test_a_state_dir_of_one_node_is_refused_for_three_and_keeps_its_cluster_id(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    one = LocalKafka(Settings(state_dir=tmp_path, kafka_port=port, kafka_controller_port=controller_port))
    # Storage formatted before the cluster id was recorded beside it.
    one.nodes[0].data_dir.mkdir(parents=True)
    (one.nodes[0].data_dir / "meta.properties").write_text("version=1\ncluster.id=formerly\nnode.id=7\n")
    (base,) = free_ports(1)
    three = LocalKafka(Settings(state_dir=tmp_path, kafka_brokers=3, kafka_port=base, kafka_controller_port=base + 1))
    with pytest.raises(Failure, match="1-node Kafka, settings ask for 3"):
        three.up()
    assert not any(node.pid_file.exists() for node in three.nodes)
    with pytest.raises(Failure):  # node.id 7 makes the broker exit, after the cluster id was recorded
        one.up()
    assert (tmp_path / "kafka" / "cluster.id").read_text().strip() == "formerly"
