"""Block every non-loopback network connection in this interpreter (tests only).

Put this folder first on ``PYTHONPATH``: Python imports ``sitecustomize`` at start-up, and child
processes (vLLM's spawned engine, multiprocessing workers) inherit ``PYTHONPATH``, so they are
blocked too. Loopback (127.0.0.0/8, ::1, ``localhost``) and Unix sockets stay open.

Blocked: ``socket.connect`` / ``connect_ex`` / ``sendto`` to any other address, and
``getaddrinfo`` / ``gethostbyname`` of any name but ``localhost`` (so no DNS look-up leaves the
machine). Every refused attempt is appended to the file ``$NETBLOCK_LOG`` when it is set, so a
test can check that nothing even tried.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

ACTIVE = True
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class NetworkBlocked(ConnectionRefusedError):
    """A non-loopback connection was refused by the test's network block."""


def _log(what: str) -> None:
    path = os.environ.get("NETBLOCK_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {what}\n")


def _host_ok(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).split("%")[0].strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name other than localhost: resolving it may leave the machine
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def _lookup_ok(host) -> bool:
    """A look-up of an IP literal or of localhost sends nothing; of any other name it may."""
    if _host_ok(host):
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    try:
        ipaddress.ip_address(str(host).split("%")[0].strip("[]"))
        return True
    except ValueError:
        return False


def _address_ok(sock, address) -> bool:
    if getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX:
        return True
    if isinstance(address, tuple) and address:
        return _host_ok(address[0])
    return False


def _refuse(what: str):
    _log(what)
    return NetworkBlocked(errno.ECONNREFUSED, f"netblock: {what} refused (non-loopback)")


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_sendto = socket.socket.sendto
_getaddrinfo = socket.getaddrinfo
_gethostbyname = socket.gethostbyname
_gethostbyname_ex = socket.gethostbyname_ex


def connect(self, address):
    if not _address_ok(self, address):
        raise _refuse(f"connect {address!r}")
    return _connect(self, address)


def connect_ex(self, address):
    if not _address_ok(self, address):
        _log(f"connect_ex {address!r}")
        return errno.ECONNREFUSED
    return _connect_ex(self, address)


def sendto(self, data, *args):
    address = args[-1] if args else None
    if not _address_ok(self, address):
        raise _refuse(f"sendto {address!r}")
    return _sendto(self, data, *args)


def getaddrinfo(host, *args, **kwargs):
    if not _lookup_ok(host):
        _log(f"getaddrinfo {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"netblock: name lookup of {host!r} refused")
    return _getaddrinfo(host, *args, **kwargs)


def gethostbyname(host):
    if not _lookup_ok(host):
        _log(f"gethostbyname {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"netblock: name lookup of {host!r} refused")
    return _gethostbyname(host)


def gethostbyname_ex(host):
    if not _lookup_ok(host):
        _log(f"gethostbyname_ex {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"netblock: name lookup of {host!r} refused")
    return _gethostbyname_ex(host)


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto
socket.getaddrinfo = getaddrinfo
socket.gethostbyname = gethostbyname
socket.gethostbyname_ex = gethostbyname_ex
