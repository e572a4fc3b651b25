"""What the two servers (serve, label) check before they listen."""
from __future__ import annotations

import errno
import ipaddress
import socket

from .errors import CnnCodesError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_can_listen(host: str, port: int) -> None:
    """A clear message now for a port that is taken, a host name that does not resolve, or an address this machine
    does not have (uvicorn would log and exit later). Every address the name resolves to is tried, as uvicorn binds
    them all (localhost: ::1 and 127.0.0.1 on many systems)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CnnCodesError(f"cannot listen on --host {host}: {exc.strerror} (a typo? 127.0.0.1 is this machine)") \
            from None
    for family, kind, protocol, _, address in addresses:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's: a closed port is free
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds "::"
                probe.bind(address)
        except OSError as exc:
            why = ("another server there? try --port" if exc.errno == errno.EADDRINUSE else
                   f"{address[0]} is not an address of this machine: try 127.0.0.1"
                   if exc.errno == errno.EADDRNOTAVAIL else "try another --port or --host")
            raise CnnCodesError(f"cannot listen on {url(address[0], port)}: {exc.strerror or exc} ({why})") from None


def url(host: str, port: int) -> str:
    """The http URL of a host and port (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
