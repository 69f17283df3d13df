"""shared/netguard.py: which addresses may be fetched. A fake resolver only: no DNS, no traffic."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest

from shared import netguard
from shared.netguard import AddressPolicy, AddressRefused, resolve_checked


class FakeResolver:
    """Answers from a table and records every question; unknown names fail like DNS does."""

    def __init__(self, table: dict[str, Sequence[str]]) -> None:
        self.table = table
        self.asked: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        if host not in self.table:
            raise OSError(-2, "Name or service not known")
        return self.table[host]


DEFAULT_POLICY = AddressPolicy()


def refused(host: str, resolver: FakeResolver | None = None, policy: AddressPolicy = DEFAULT_POLICY) -> str:
    with pytest.raises(AddressRefused) as info:
        resolve_checked(host, 443, policy, resolver or FakeResolver({}))
    return str(info.value)


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1", "loopback"),  # inet_aton's short forms
        ("0x7f000001", "loopback"),
        ("2130706433", "loopback"),
        ("0177.0.0.1", "loopback"),  # octal
        ("0x7f.1", "loopback"),
        ("127.0.0.1.", "loopback"),  # a trailing dot
        ("::1", "loopback"),
        ("[::1]", "loopback"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("::ffff:8.8.8.8", "IPv4-mapped"),  # mapped addresses are refused whatever they map to
        ("[::ffff:7f00:1]", "IPv4-mapped"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("169.254.0.1", "link-local"),
        ("10.0.0.1", "private"),
        ("10.255.255.255", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("febf::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.10", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("64:ff9b::a00:1", "NAT64"),
        ("2002:a00:1::1", "6to4"),
        ("2001:db8::1", "documentation"),
    ],
)
def test_internal_addresses_are_refused_in_any_spelling(host: str, reason: str) -> None:
    resolver = FakeResolver({})
    message = refused(host, resolver)
    assert reason in message and "DLPIPE_FETCH_ALLOW_PRIVATE" in message
    assert resolver.asked == []  # a literal is never sent to the resolver


@pytest.mark.parametrize(
    "host", ["93.184.215.14", "8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "[2a00:1450::1]"]
)
def test_public_literals_are_allowed(host: str) -> None:
    [address] = resolve_checked(host, 443, AddressPolicy(), FakeResolver({}))
    assert address == ipaddress.ip_address(host.strip("[]"))


def test_a_public_name_resolves_to_its_checked_addresses() -> None:
    resolver = FakeResolver({"images.example": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]})
    addresses = resolve_checked("images.example", 8443, AddressPolicy(), resolver)
    assert [str(a) for a in addresses] == ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert resolver.asked == [("images.example", 8443)]


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["127.0.0.1"], "loopback"),
        (["10.1.2.3"], "private"),
        (["169.254.169.254"], "link-local"),
        (["::ffff:10.0.0.1"], "IPv4-mapped"),
        (["93.184.215.14", "192.168.0.10"], "private"),  # one bad answer among good ones: refused
    ],
)
def test_a_name_that_resolves_inside_is_refused(answers: list[str], reason: str) -> None:
    message = refused("rebind.example", FakeResolver({"rebind.example": answers}))
    assert message.startswith("rebind.example (") and reason in message


def test_names_that_do_not_resolve_or_resolve_to_nothing_are_refused() -> None:
    assert "cannot resolve host 'nowhere.example'" in refused("nowhere.example")
    assert "has no address" in refused("empty.example", FakeResolver({"empty.example": []}))
    assert "not an IP address" in refused("odd.example", FakeResolver({"odd.example": ["localhost"]}))


@pytest.mark.parametrize(
    "host", ["256.0.0.1", "1.2.3.256", "0x1ffffffff", "4294967296", "08.0.0.1", "1.2.65536"]
)
def test_numeric_hosts_out_of_range_are_refused_not_resolved(host: str) -> None:
    resolver = FakeResolver({host: ["93.184.215.14"]})
    assert "not a valid IPv4 address" in refused(host, resolver)
    assert resolver.asked == []


@pytest.mark.parametrize("host", ["cafe", "dead.beef", "1e100.net", "a1.example", "0x.example"])
def test_names_made_of_hex_letters_are_still_names(host: str) -> None:
    assert netguard.parse_literal(host) is None


def test_allow_private_lets_internal_addresses_through() -> None:
    policy = AddressPolicy(allow_private=True)
    assert [str(a) for a in resolve_checked("127.1", 80, policy, FakeResolver({}))] == ["127.0.0.1"]
    resolver = FakeResolver({"db.internal": ["10.0.0.5"]})
    assert [str(a) for a in resolve_checked("db.internal", 80, policy, resolver)] == ["10.0.0.5"]


def test_allowed_networks_are_a_narrow_exception() -> None:
    policy = AddressPolicy(allowed=netguard.networks(["127.0.0.1/32"]))
    assert [str(a) for a in resolve_checked("127.0.0.1", 80, policy, FakeResolver({}))] == ["127.0.0.1"]
    assert "loopback" in refused("127.0.0.2", policy=policy)
    assert "private" in refused("10.0.0.1", policy=policy)


def test_every_refused_range_is_refused_at_both_ends() -> None:
    for network, _reason in netguard.REFUSED_NETWORKS:
        for address in (network[0], network[-1]):
            assert netguard.refusal_reason(address) is not None, (network, address)
    assert netguard.refusal_reason(ipaddress.ip_address("100.63.255.255")) is None  # just below CGNAT
    assert netguard.refusal_reason(ipaddress.ip_address("100.128.0.0")) is None  # just above
    assert netguard.refusal_reason(ipaddress.ip_address("172.32.0.1")) is None
    assert netguard.refusal_reason(ipaddress.ip_address("11.0.0.1")) is None
