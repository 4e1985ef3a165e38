"""The supervisor's port check: a real listener stops start-up; what a stop under traffic leaves does not."""

from __future__ import annotations

import socket

import pytest

from clickedge.supervise import check_port_free
from common.settings import ConfigError


@pytest.mark.parametrize(
    ("address", "reuse_port"),
    [("127.0.0.1", False), ("0.0.0.0", False), ("127.0.0.1", True)],
    ids=["same-address", "wildcard", "reuse-port"],
)
def test_a_listener_on_the_port_is_found(address: str, reuse_port: bool) -> None:
    with socket.socket() as listener:
        if reuse_port:  # as edge workers listen: a newcomer with SO_REUSEPORT could share it silently
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind((address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            check_port_free("127.0.0.1", port)


def test_a_port_in_time_wait_is_free() -> None:
    # A server that closed its side first (as the edge does on stop) leaves the connection in TIME-WAIT on
    # its listening port. Nothing listens any more.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        server_side, _ = listener.accept()
        server_side.close()  # the server closes first: its end goes to TIME-WAIT once the client closes too
        assert client.recv(1) == b""
        client.close()
    check_port_free("127.0.0.1", port)
