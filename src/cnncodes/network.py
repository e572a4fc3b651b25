"""What the two servers (serve, label) check before they listen."""
from __future__ import annotations

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
    """A clear message now for a port that is taken or an address this machine does not have (uvicorn would log
    and exit later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CnnCodesError(f"cannot listen on {host}:{port}: {exc.strerror} (another server there? try --port)") from None
