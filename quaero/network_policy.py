"""Which addresses a crawl may connect to.

By default a crawl reaches the public internet only: loopback, link-local (cloud metadata at
169.254.169.254), private, shared (CGNAT), unspecified, multicast and reserved addresses are refused,
also when they hide inside an IPv6 address (IPv4-mapped, NAT64, 6to4, Teredo). A definition opts in
for an intranet crawl with allow_private_networks, or more narrowly with allowed_networks (CIDRs).
The executor checks the resolved address of every hop, and connects only to an address it checked,
so redirects and DNS rebinding are covered. Knows nothing of gRPC or HTTP.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_ALLOWED_NETWORKS = 100
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def kind_of(address: Address) -> str:
    """'public', or what makes the address non-public: 'loopback', 'link-local', 'private', ..."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            kind = kind_of(inner)
            if kind != "public":
                return kind
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"  # shared address space (100.64/10), documentation ranges and the like
    return "public"


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs ('10.0.0.0/8', '127.0.0.1/32', '::1/128'); ValueError naming the index of a bad one."""
    networks = []
    for index, item in enumerate(items):
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise ValueError(f"[{index}] {item[:100]!r} is not a network (CIDR such as 10.0.0.0/8)") from None
    return tuple(networks)


@dataclass(frozen=True)
class NetworkPolicy:
    allow_private: bool = False
    allowed: tuple[Network, ...] = ()

    @classmethod
    def from_crawl(cls, crawl: dict[str, object]) -> NetworkPolicy:
        networks = crawl.get("allowed_networks") or []
        return cls(bool(crawl.get("allow_private_networks")),
                   parse_networks(networks if isinstance(networks, list) else []))

    def refusal(self, address: str | Address) -> str | None:
        """None when a crawl may connect to the address; else what kind of address it is."""
        if isinstance(address, str):
            address = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
        kind = kind_of(address)
        if kind == "public" or self.allow_private:
            return None
        if any(address.version == network.version and address in network for network in self.allowed):
            return None
        return kind

    def host_refusal(self, host: str) -> str | None:
        """For a URL's host before resolving it: an IP literal or localhost that the policy refuses."""
        host = host.strip("[]").lower().rstrip(".")
        if host == "localhost" or host.endswith(".localhost"):
            return self.refusal("127.0.0.1")
        try:
            return self.refusal(host)
        except ValueError:
            return None  # a name: decided when it is resolved
