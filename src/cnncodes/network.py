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
    does not have (uvicorn would log and exit later)."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise CnnCodesError(f"cannot listen on --host {host}: {exc.strerror} (a typo? 127.0.0.1 is this machine "
                            "only, 0.0.0.0 every address)") from None
    with socket.socket(family) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            why = ("another server there? try --port" if exc.errno == errno.EADDRINUSE else
                   f"{host} is not an address of this machine: try 127.0.0.1, or 0.0.0.0 for every address"
                   if exc.errno == errno.EADDRNOTAVAIL else "try another --port or --host")
            raise CnnCodesError(f"cannot listen on {url(host, port)}: {exc.strerror} ({why})") from None


def url(host: str, port: int) -> str:
    """The http URL of a host and port (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
