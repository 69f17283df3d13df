"""Fetch a user-given http(s) URL, safely: the SSRF guard, a deadline, a size cap, few redirects.

Every hop (the URL itself, then each redirect's target) is checked the same way: http or
https, no credentials, every address of its host allowed by shared.netguard. The request
then goes to the checked address itself (the URL's host replaced by that address, the
original name kept in `Host` and, for https, in the TLS server name that the certificate
is verified against), so the name is never resolved a second time. Environment proxies
are ignored (they would connect elsewhere). The whole fetch, redirects and body included,
has one deadline; the body is streamed and cut off one byte past the cap (decoded bytes:
a compressed body cannot expand past it).

Failures raise shared.errors.ItemError with a message that starts with the input's field
name, e.g. `image_url: server answered 404`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from shared import netguard
from shared.errors import ItemError

log = logging.getLogger(__name__)

USER_AGENT = "dlpipe-fetch/1"
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchPolicy:
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 3
    address: netguard.AddressPolicy = field(default_factory=netguard.AddressPolicy)
    resolver: netguard.Resolver = netguard.system_resolver
    verify: ssl.SSLContext | bool = True  # TLS verification (the system's CAs); tests pass their own


def human_bytes(count: int) -> str:
    """20971520 -> '20 MiB', 2048 -> '2 KiB', 1000 -> '1000 bytes'."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"


def is_image_type(content_type: str) -> bool:
    return content_type.startswith("image/")


@dataclass(frozen=True)
class _Target:
    url: httpx.URL  # the URL with its host replaced by the checked address
    host_header: str
    sni_hostname: str | None
    host: str


def _targets(url: httpx.URL, policy: FetchPolicy, label: str) -> list[_Target]:
    if url.scheme not in ("http", "https"):
        raise ItemError(f"{label}: {url.scheme or 'no'} scheme; only http and https URLs are fetched")
    host = url.raw_host.decode("ascii")  # IDNA-encoded: what DNS, `Host` and TLS see
    if not host:
        raise ItemError(f"{label}: URL has no host")
    if url.userinfo:
        raise ItemError(f"{label}: credentials in the URL are not accepted")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = netguard.resolve_checked(host, port, policy.address, policy.resolver)
    except netguard.AddressRefused as exc:
        raise ItemError(f"{label}: {exc}") from None
    literal = _is_literal(host)
    host_header = url.netloc.decode("ascii")
    targets = []
    for address in addresses:
        targets.append(
            _Target(
                url=url.copy_with(host=str(address)),
                host_header=host_header,
                sni_hostname=None if literal or url.scheme != "https" else host,
                host=host,
            )
        )
    return targets


def _is_literal(host: str) -> bool:
    try:
        return netguard.parse_literal(host) is not None
    except ValueError:
        return False


def _remaining(deadline: float, policy: FetchPolicy, label: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise ItemError(f"{label}: timed out after {policy.timeout_s:g} s")
    return left


def _open(client: httpx.Client, target: _Target, timeout: float) -> httpx.Response:
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    request = client.build_request(
        "GET",
        target.url,
        headers={"Host": target.host_header, "User-Agent": USER_AGENT, "Accept": "image/*"},
        timeout=httpx.Timeout(timeout),
        extensions=extensions,
    )
    return client.send(request, stream=True)


def _read_body(response: httpx.Response, deadline: float, policy: FetchPolicy, label: str) -> bytes:
    too_large = f"{label}: larger than {human_bytes(policy.max_bytes)}"
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise ItemError(too_large)
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes(_CHUNK):
        size += len(chunk)
        if size > policy.max_bytes:
            raise ItemError(too_large)
        chunks.append(chunk)
        _remaining(deadline, policy, label)
    return b"".join(chunks)


def _next_hop(
    current: httpx.URL, response: httpx.Response, hop: int, policy: FetchPolicy, label: str
) -> httpx.URL:
    if policy.max_redirects == 0:
        raise ItemError(
            f"{label}: server answered {response.status_code} (a redirect); redirects are not followed"
        )
    if hop == policy.max_redirects:
        raise ItemError(f"{label}: too many redirects (more than {policy.max_redirects})")
    try:
        target = current.join(response.headers["location"])
    except (httpx.InvalidURL, ValueError):
        raise ItemError(f"{label}: redirected to an invalid URL") from None
    log.debug("%s: redirect %d -> %s", label, response.status_code, target)
    return target


def _accept(
    response: httpx.Response,
    deadline: float,
    policy: FetchPolicy,
    label: str,
    accept: Callable[[str], bool],
    kind: str,
) -> bytes:
    if not response.is_success:
        raise ItemError(f"{label}: server answered {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not content_type:
        raise ItemError(f"{label}: the server gave no content-type; expected {kind}")
    if not accept(content_type):
        raise ItemError(f"{label}: content-type {content_type} is not {kind}")
    return _read_body(response, deadline, policy, label)


def fetch(
    url: str,
    policy: FetchPolicy,
    *,
    label: str = "image_url",
    accept: Callable[[str], bool] = is_image_type,
    kind: str = "an image",
) -> bytes:
    """The body of `url` (2xx, a content type `accept` takes), or ItemError saying why not."""
    deadline = time.monotonic() + policy.timeout_s
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ItemError(f"{label}: not a valid URL") from None
    with httpx.Client(trust_env=False, follow_redirects=False, verify=policy.verify) as client:
        for hop in range(policy.max_redirects + 1):
            targets = _targets(current, policy, label)
            response = None
            for number, target in enumerate(targets):
                try:
                    response = _open(client, target, _remaining(deadline, policy, label))
                    break
                except httpx.ConnectError as exc:
                    if number == len(targets) - 1:
                        raise ItemError(f"{label}: cannot connect to {target.host}: {exc}") from None
                except httpx.TimeoutException:
                    raise ItemError(f"{label}: timed out after {policy.timeout_s:g} s") from None
                except httpx.HTTPError as exc:
                    raise ItemError(f"{label}: request failed ({type(exc).__name__}: {exc})") from None
            assert response is not None
            try:
                if response.is_redirect:
                    current = _next_hop(current, response, hop, policy, label)
                    continue
                return _accept(response, deadline, policy, label, accept, kind)
            except httpx.TimeoutException:
                raise ItemError(f"{label}: timed out after {policy.timeout_s:g} s") from None
            except httpx.HTTPError as exc:
                raise ItemError(f"{label}: reading the answer failed ({type(exc).__name__}: {exc})") from None
            finally:
                response.close()
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
