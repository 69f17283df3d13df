"""Which network addresses dlpipe may connect to on a user's behalf (SSRF guard).

A user-given URL (an `image_url` input, a webhook's URL) must not make dlpipe reach into
its own network: loopback, private ranges, link-local (cloud metadata at 169.254.169.254),
carrier-grade NAT, multicast, reserved and unspecified addresses are refused, and so are
IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64, 6to4, Teredo),
unless the caller allows private addresses (DLPIPE_FETCH_ALLOW_PRIVATE, DLPIPE_WEBHOOK_ALLOW_PRIVATE).

Pure: no I/O except through the `resolver` callable (the system's getaddrinfo by default;
tests pass a fake one). Every address a host resolves to is checked, and the caller must
connect to one of the addresses returned, never resolve the name again, so that DNS
cannot answer differently between the check and the connection.

Host names that are numbers in disguise (`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`:
forms `inet_aton` and browsers accept) are read as the IPv4 address they stand for.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> the host's addresses, as text

# The ranges refused, each with the reason given. Python's `ipaddress` flags miss some of
# these (100.64.0.0/10 is neither private nor global) and change between versions, so the
# list is spelled out; `is_global` is checked as well, as a second net.
_REFUSED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "carrier-grade NAT (shared address space)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes the broadcast address 255.255.255.255
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped IPv6"),
    ("::/96", "IPv4-compatible IPv6 (deprecated)"),
    ("64:ff9b::/96", "IPv4-embedded IPv6 (NAT64)"),
    ("64:ff9b:1::/48", "IPv4-embedded IPv6 (local NAT64)"),
    ("100::/64", "reserved (discard prefix)"),
    ("2001::/23", "reserved (IETF protocol assignments, Teredo)"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("2002::/16", "IPv4-embedded IPv6 (6to4)"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)
REFUSED_NETWORKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), reason) for net, reason in _REFUSED
)


_NUMERIC_CHARS = frozenset("0123456789abcdefxABCDEFX")


class AddressRefused(ValueError):
    """A host that resolves to an address the policy refuses, or that does not resolve."""

    def __init__(self, message: str, host: str, address: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.address = address


@dataclass(frozen=True)
class AddressPolicy:
    """What may be reached. `allow_private`: everything (trusted networks only); `allowed`:
    networks let through even though they are refused otherwise (a narrower exception)."""

    allow_private: bool = False
    allowed: tuple[IPNetwork, ...] = ()
    # The setting that lifts the guard, named in refusals (webhooks: DLPIPE_WEBHOOK_ALLOW_PRIVATE)
    override: str = "DLPIPE_FETCH_ALLOW_PRIVATE"


def refusal_reason(address: IPAddress) -> str | None:
    """Why this address must not be reached ('loopback', 'private', ...), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    for network, reason in REFUSED_NETWORKS:
        if address.version == network.version and address in network:
            return reason
    if address.is_multicast:
        return "multicast"
    if not address.is_global:
        return "not globally routable"
    return None


def check_address(address: IPAddress, host: str, policy: AddressPolicy) -> IPAddress:
    """The address itself if `policy` lets it be reached; else AddressRefused saying why."""
    if policy.allow_private:
        return address
    if any(address.version == net.version and address in net for net in policy.allowed):
        return address
    reason = refusal_reason(address)
    if reason is None:
        return address
    shown = host if host == str(address) else f"{host} ({address})"
    raise AddressRefused(
        f"{shown} is a {reason} address, which is refused ({policy.override}=true allows it)",
        host=host,
        address=str(address),
    )


def _ipv4_part(text: str) -> int | None:
    """One dotted part as inet_aton reads it: decimal, 0x-hex or 0-leading octal; None if not a number."""
    if not text:
        return None
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16) if text[2:] else 0
        if len(text) > 1 and text[0] == "0":
            return int(text[1:], 8)
        return int(text, 10) if text.isdigit() else None
    except ValueError:
        return None


def parse_ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """`127.1`, `0x7f000001`, `2130706433`, `0177.0.0.1`... as the IPv4 address they mean.

    None when `host` is not an all-numeric host; ValueError when it looks numeric but
    overflows (an address no resolver should be asked about).
    """
    text = host[:-1] if host.endswith(".") else host
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(p and set(p) <= _NUMERIC_CHARS for p in parts):
        return None
    if not parts[-1][:1].isdigit():  # a name like `cafe` or `a.b.dead` is a host name, not a number
        return None
    numbers = [_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        if all(p[:1].isdigit() for p in parts):
            raise ValueError(f"{host!r} is not a valid IPv4 address")
        return None
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        raise ValueError(f"{host!r} is not a valid IPv4 address (a part is out of range)")
    value = 0
    for n in head:
        value = value * 256 + n
    value = value * 256 ** (4 - len(head)) + last
    return ipaddress.IPv4Address(value)


def parse_literal(host: str) -> IPAddress | None:
    """The address a host that is an IP literal stands for (IPv6 with or without brackets,
    IPv4 in any numeric form); None for a host name. ValueError for a malformed literal."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(f"{host!r} is not a valid IPv6 address") from None
    return parse_ipv4_number(text)


def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (getaddrinfo), in its order, once each."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _canon, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def resolve_checked(
    host: str,
    port: int,
    policy: AddressPolicy = AddressPolicy(),
    resolver: Resolver = system_resolver,
) -> list[IPAddress]:
    """Every address of `host`, each checked against `policy`; connect only to one of these.

    Refuses the whole host if any of its addresses is refused (a name that answers with a
    public and a private address is not trusted with either). Raises AddressRefused when
    the host is refused or does not resolve.
    """
    try:
        literal = parse_literal(host)
    except ValueError as exc:
        raise AddressRefused(str(exc), host=host) from None
    if literal is not None:
        return [check_address(literal, host, policy)]
    try:
        found = list(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"cannot resolve host {host!r} ({exc})", host=host) from None
    if not found:
        raise AddressRefused(f"host {host!r} has no address", host=host)
    addresses: list[IPAddress] = []
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            message = f"host {host!r} resolved to {text!r}, not an IP address"
            raise AddressRefused(message, host=host) from None
        addresses.append(check_address(address, host, policy))
    return addresses


def networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Networks from text (`127.0.0.1/32`, `10.0.0.0/8`), for AddressPolicy.allowed."""
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)
