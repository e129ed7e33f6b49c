"""``EJX_HTTP_REUSE_PORT``: several servers listen on one port; a server that did not ask for it cannot, and
a port in use is a one-line Failure either way. A host is listened on at every address it resolves to."""

from __future__ import annotations

import errno
import socket

import pytest

from broker.app.bootstrap import listeners
from broker.devtools.demo.setup import free_port
from broker.domain.faults import Failure
from broker.settings import Settings


def test_two_shared_listeners_take_one_port_and_a_plain_bind_is_refused() -> None:
    settings = Settings(http_host="127.0.0.1", http_port=free_port(), http_reuse_port=True)
    [first] = listeners(settings)
    [second] = listeners(settings)
    try:
        assert first.getsockname() == second.getsockname() == ("127.0.0.1", settings.http_port)
        with socket.socket() as plain, pytest.raises(OSError) as refused:
            plain.bind(("127.0.0.1", settings.http_port))
        assert refused.value.errno == errno.EADDRINUSE
        # Both accept: a connection is queued on one of them.
        with socket.create_connection(("127.0.0.1", settings.http_port), timeout=5):
            pass
    finally:
        first.close()
        second.close()


def test_a_port_held_by_a_server_without_it_is_a_one_line_failure() -> None:
    settings = Settings(http_host="127.0.0.1", http_port=free_port(), http_reuse_port=True)
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", settings.http_port))
        plain.listen()
        with pytest.raises(Failure, match="cannot listen on 127.0.0.1:.*EJX_HTTP_REUSE_PORT"):
            listeners(settings)


def test_a_port_in_use_without_reuse_port_is_a_one_line_failure() -> None:
    settings = Settings(http_host="127.0.0.1", http_port=free_port())
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", settings.http_port))
        plain.listen()
        with pytest.raises(Failure, match=r"cannot listen on 127.0.0.1:\d+ \(Address already in use\)$"):
            listeners(settings)


def test_an_empty_host_listens_on_every_interface_each_family_on_its_own() -> None:
    """As uvicorn binds by itself: 0.0.0.0 and ::, the IPv6 socket IPv6 only (so the two never collide)."""
    settings = Settings(http_host="", http_port=free_port())
    bound = listeners(settings)
    try:
        assert sorted(s.getsockname()[0] for s in bound) == sorted(
            {"0.0.0.0", "::"} if socket.has_ipv6 else {"0.0.0.0"})
        for listening in bound:
            if listening.family == socket.AF_INET6:
                assert listening.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        with socket.create_connection(("127.0.0.1", settings.http_port), timeout=5):
            pass
    finally:
        for listening in bound:
            listening.close()
