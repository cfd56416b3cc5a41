"""Keep a one-machine torchrun run's TCP stores on the loopback interface.

torchrun's agent (our launcher process) hosts two c10d ``TCPStore`` servers: the rendezvous store and the
store it shares with the workers (``MASTER_ADDR:MASTER_PORT``). Neither authenticates a client: whoever
reaches the port can read and set keys, which is enough to stall, derail or inject into the run. In torch 2.14
a ``TCPStore`` server listens on every interface (``*:port``) whatever host name it is given; only a socket
handed to it ready-made (``master_listen_fd``) decides where it listens. So, for a single-node run, the two
places where the agent creates a server are wrapped to hand it a socket bound to 127.0.0.1, and the workers
are told to meet there (``--local-addr=127.0.0.1`` becomes their ``MASTER_ADDR``). gloo's own connections
between the workers are kept on the loopback interface by ``GLOO_SOCKET_IFNAME`` (see ``launcher.torchrun_env``).

A multi-node run cannot be kept on loopback: its rendezvous port must be reachable by the other hosts, and by
nothing else (README, "Several GPUs").
"""

from __future__ import annotations

import os
import socket
from typing import Any

LOOPBACK = "127.0.0.1"


def _listening_socket(port: int) -> tuple[int, int]:
    """A TCP socket listening on 127.0.0.1:``port`` (0: any free port), as (the port, its file descriptor,
    which the caller now owns)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        # torch's rendezvous retries as a client on RuntimeError (another process hosts the store already)
        raise RuntimeError(f"cannot listen on {LOOPBACK}:{port}: {exc}") from exc
    return sock.getsockname()[1], sock.detach()


def loopback_store(host_name: str, port: int, *args: Any, is_master: bool = False, **kwargs: Any):
    """``torch.distributed.TCPStore(...)``, except that a server listens on 127.0.0.1 only."""
    from torch.distributed import TCPStore

    if not is_master or args:  # positional world_size/is_master are not used by torchrun's callers
        return TCPStore(host_name, port, *args, is_master=is_master, **kwargs)
    bound, fd = _listening_socket(port)
    try:
        return TCPStore(host_name, bound, is_master=True, master_listen_fd=fd, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def bind_agent_stores_to_loopback() -> None:
    """Make this process's torchrun agent host its stores on 127.0.0.1 (call before ``torch.distributed.run``)."""
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler

    c10d_rendezvous_backend.TCPStore = loopback_store  # the rendezvous store: TCPStore(host, port, is_master=...)

    def shared_store_server(self, master_addr: str, master_port: int):
        return loopback_store(master_addr, master_port, is_master=True, multi_tenant=True)

    DynamicRendezvousHandler._create_tcp_store_server = shared_store_server  # the store shared with the workers


def loopback_interface() -> str | None:
    """The name of this machine's loopback interface ("lo" on Linux, "lo0" on macOS and BSD), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    return next((n for n in ("lo", "lo0") if n in names), None)
