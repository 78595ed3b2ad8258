"""Which Host headers the server answers to: its guard against DNS rebinding.

A web page on evil.example.com can point that name at 127.0.0.1 once the page has loaded; its scripts
then reach this server as same-origin requests to http://evil.example.com:8080/, and could read the
answers. What gives it away is the Host header, which carries the attacker's name. So the server
answers only to names it knows as its own, as Jupyter does (`local_hostnames`, `allow_remote_access`):
localhost and *.localhost (RFC 6761 keeps them on the loopback), --host when it is a name, this
machine's own host name, and the names given with --allowed-hosts (`*` for any).

An IP address in the Host header is no rebinding risk (rebinding needs a name the attacker controls),
whatever address it is, so IP literals are always accepted; the port is not checked either.
"""

from __future__ import annotations

import ipaddress
import socket

from ..flags.settings import Settings

LOCAL_NAMES = frozenset({"localhost"})
LOCAL_SUFFIX = ".localhost"


def split_host(header: str) -> str:
    """The host name or address in a Host header, without its port or IPv6 brackets, lower-cased and
    without a trailing dot ("LocalHost.:8080" -> "localhost", "[::1]:8080" -> "::1")."""
    header = header.strip()
    if header.startswith("["):
        end = header.find("]")
        return header[1:end] if end > 0 else header
    if header.count(":") == 1:  # name:port; more than one colon is a bare IPv6 address
        header = header.split(":", 1)[0]
    return header.lower().rstrip(".")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """Built once from the settings; `allows(header)` answers for each request."""

    def __init__(self, names: set[str], suffixes: tuple[str, ...] = (), any_host: bool = False) -> None:
        self.names = frozenset(LOCAL_NAMES | names)
        self.suffixes = (LOCAL_SUFFIX, *suffixes)
        self.any_host = any_host

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        names: set[str] = set()
        suffixes: list[str] = []
        any_host = False
        for entry in (settings.allowed_hosts or "").split(","):
            name = split_host(entry) if not entry.strip().startswith("*") else entry.strip().lower().rstrip(".")
            if name == "*":
                any_host = True
            elif name.startswith("*."):
                suffixes.append(name[1:])
            elif name:
                names.add(name)
        for address in (settings.host or "").split(","):  # --host may list several, as llama-server's
            bound = split_host(address.strip())
            if bound and not is_ip_literal(bound):
                names.add(bound)  # --host myname.lan: the user's own name for this server
        # This machine's own name (`http://mybox:8080/` from another machine when listening on
        # 0.0.0.0): a page elsewhere cannot make the browser send it for the attacker's site.
        own = socket.gethostname().lower().rstrip(".")
        if own:
            names.update({own, own.split(".", 1)[0]})
        return cls(names, tuple(suffixes), any_host)

    def allows(self, header: str | None) -> bool:
        """True for a request this server may answer. A request without a Host header (HTTP/1.0 tools)
        is accepted: browsers always send one."""
        if self.any_host or not header:
            return True
        host = split_host(header)
        if is_ip_literal(host) or host in self.names:
            return True
        return any(host.endswith(suffix) for suffix in self.suffixes)
