"""Where the service may send a request a tenant names (a webhook, an MLflow tracking
server): the guard against server-side request forgery.

A webhook's URL is the tenant's, and the service would fetch it from inside the operator's
network. So no request goes to an address that is not public (loopback, private, link-local,
unique-local, shared, multicast, unspecified, documentation; the clouds' metadata addresses are
among them) unless the operator allows its range (`TUNERY_WEBHOOK_ALLOW`), and plain `http` only
inside an allowed range. A name is checked for every address it resolves to, both when the
webhook is made and at each delivery, where the request then goes to the very address checked
(`app.services.webhook_delivery`): a name that resolves elsewhere in between (DNS rebinding)
reaches nothing it should not. An MLflow tracking server is checked the same way against
`TUNERY_MLFLOW_ALLOW`, when the job is submitted and when its worker starts logging; the
MLflow client then makes its own connections (worker/mlflow_logging.py says what else bounds
them).
"""

import ipaddress
import socket
from collections.abc import Sequence

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 addresses that carry an IPv4 one, which the IPv6 address's own properties do not judge:
# NAT64's well-known prefix (RFC 6052) translates to the IPv4 address in its last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Ranges Python's `is_global` calls global that no webhook should reach: local-use NAT64 (RFC
# 8215, into the operator's own IPv4), IPv4-compatible addresses (deprecated, carrying an IPv4
# one) and site-local addresses (deprecated, private).
NOT_PUBLIC = (
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("fec0::/10"),
)


class ForbiddenAddress(Exception):
    """The URL may not be requested; the message says why, for the tenant to read."""


def _carried(address: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address it carries (mapped, 6to4, Teredo, NAT64)."""
    if address.version == 4:
        return [address]
    carried: list[IPAddress] = [address]
    if address.ipv4_mapped is not None:
        carried.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    if address in NAT64 or address in NOT_PUBLIC[1]:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return carried


def is_allowed(address: IPAddress, allow: Sequence[IPNetwork]) -> bool:
    """A public unicast address (and all it carries), or one in a range the operator allows."""
    if any(address in network for network in allow):
        return True
    return all(
        a.is_global and not a.is_multicast and not a.is_reserved and not _not_public(a)
        for a in _carried(address)
    )


def _not_public(address: IPAddress) -> bool:
    return address.version == 6 and any(address in network for network in NOT_PUBLIC)


def check_addresses(
    host: str, addresses: Sequence[IPAddress], https: bool, allow: Sequence[IPNetwork]
) -> None:
    """Raise ForbiddenAddress unless each address may be reached (by `http`: only in `allow`)."""
    for address in addresses:
        if not is_allowed(address, allow):
            raise ForbiddenAddress(f"{host} resolves to {address}, which is not a public address")
        if not https and not any(address in network for network in allow):
            raise ForbiddenAddress("must be https (plain http only reaches allowed ranges)")


def parse(url: str) -> httpx.URL:
    """The URL, if it is an absolute http(s) URL with a host; else ForbiddenAddress."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ForbiddenAddress(f"not a URL: {error}") from error
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ForbiddenAddress("must be an https URL, such as https://example.com/hooks")
    if parsed.userinfo:
        raise ForbiddenAddress("may not carry credentials; the signature authenticates")
    return parsed


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def _addresses(infos: list[tuple]) -> list[IPAddress]:
    # An IPv6 address may come with a zone (`fe80::1%eth0`), which ip_address refuses.
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))


def reachable(url: str, allow: Sequence[IPNetwork]) -> None:
    """Raise ForbiddenAddress unless `url` is one the service may request (a tenant's)."""
    resolve(parse(url), allow)


def resolve(url: httpx.URL, allow: Sequence[IPNetwork]) -> list[IPAddress]:
    """The addresses the URL's host resolves to, each one allowed; else ForbiddenAddress.
    Blocking (the system's resolver): on an event loop, call it in a thread."""
    try:
        infos = socket.getaddrinfo(url.host, port_of(url), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise ForbiddenAddress(f"{url.host} does not resolve: {error}") from error
    addresses = _addresses(infos)
    check_addresses(url.host, addresses, url.scheme == "https", allow)
    return addresses
