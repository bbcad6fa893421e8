"""OCI registries as blob sources: ``oci://`` references, the Wasm artifact layout, push and pull.

A cap or guest is pushed as a CNCF "Wasm OCI artifact": an image manifest
(``application/vnd.oci.image.manifest.v1+json``) whose config is
``application/vnd.wasm.config.v0+json`` and whose one layer,
``application/wasm``, is the component's bytes. The layer digest is therefore
the sha256 of the ``.wasm`` file: the digest a plan already names. A detached
signature (a DSSE envelope) is pushed beside it as a second artifact under
the tag ``sha256-<hex>.sig`` (cosign's tag-based attachment: distribution has
no referrers API), with one ``application/vnd.dsse.envelope.v1+json`` layer
and the empty config.

References (docs/registry.md)::

    oci://HOST[:PORT]/REPO:TAG
    oci://HOST[:PORT]/REPO@sha256:<manifest digest>
    oci://HOST[:PORT]/REPO:TAG@sha256:<manifest digest>   (the digest wins; the tag is for readers)

``@sha256:`` is the *manifest* digest, as everywhere in OCI. Neither a tag nor
a manifest digest is trusted for anything: whatever a reference resolves to,
the manifest must have exactly one layer of an accepted media type whose
digest is the digest the plan asked for, and the layer's bytes are hashed
before they are stored (pylon.blobstore).

Transport: ``http`` for loopback registries (127.0.0.0/8, ::1, localhost) and
for hosts listed in ``PYLON_INSECURE_REGISTRIES`` (comma-separated
``host[:port]``), ``https`` for every other host.

The distribution protocol, auth challenges (Basic and Bearer token) and
Docker config credentials are the ``oras`` client's; this module adds what
it lacks (see :class:`Client`). ``requests`` and ``oras`` are imported only
when a registry is actually contacted.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import os
import re
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylon.blobstore import digest_bytes, digest_file
from pylon.errors import BlobError, FetchError, PlanError

__all__ = [
    "ACCEPTED_LAYER_TYPES",
    "DSSE_MEDIA_TYPE",
    "EMPTY_CONFIG_MEDIA_TYPE",
    "INSECURE_ENV",
    "MANIFEST_MEDIA_TYPE",
    "MAX_MANIFEST_BYTES",
    "WASM_CONFIG_MEDIA_TYPE",
    "WASM_LAYER_TYPES",
    "Artifact",
    "BlobBody",
    "Client",
    "Reference",
    "client",
    "docker_config_path",
    "is_oci",
    "parse_reference",
    "plain_http",
    "signature_tag",
]

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
EMPTY_CONFIG_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
#: The layer types a component may come as: the CNCF one, then wasmCloud's
#: older one and Spin's, read as a courtesy.
WASM_LAYER_TYPES = ("application/wasm", "application/vnd.module.wasm.content.layer.v1+wasm",
                    "application/vnd.wasm.content.layer.v1+wasm")
#: Every layer type a fetch accepts: a component or a signature envelope.
ACCEPTED_LAYER_TYPES = frozenset((*WASM_LAYER_TYPES, DSSE_MEDIA_TYPE))
#: A manifest larger than this is refused before it is parsed (containerd's limit too).
MAX_MANIFEST_BYTES = 4 << 20
#: Comma-separated ``host[:port]`` of registries reached over plain http although not on loopback.
INSECURE_ENV = "PYLON_INSECURE_REGISTRIES"

# The distribution spec's grammar for repository names and tags.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_HOST_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?")


def is_oci(source: str) -> bool:
    """True if ``source`` is an ``oci://`` URL (well-formed or not)."""
    return source[:6].lower() == "oci://"


@dataclass(frozen=True)
class Reference:
    """A parsed ``oci://`` reference.

    Attributes:
        host: ``host[:port]`` of the registry.
        repository: the repository path (``caps/crc32c``).
        tag: the tag, if the reference has one.
        digest: the *manifest* digest (``sha256:<hex>``), if it has one; it wins over the tag.
    """

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"oci://{self.host}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def hostname(self) -> str:
        """The host without its port (and without IPv6 brackets)."""
        return urllib.parse.urlsplit(f"//{self.host}").hostname or self.host

    @property
    def target(self) -> str:
        """What the registry API is asked for: the manifest digest if known, else the tag."""
        return self.digest or self.tag or ""

    def at(self, *, tag: str | None = None, digest: str | None = None) -> Reference:
        """The same repository with another tag and/or manifest digest."""
        return Reference(self.host, self.repository, tag, digest)


def parse_reference(text: str) -> Reference:
    """Parses ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX|:TAG@sha256:HEX)``.

    Raises:
        PlanError: it is not such a reference; the message says which part is wrong.
    """
    def bad(why: str) -> PlanError:
        return PlanError(f"not an OCI reference: {text!r}: {why} "
                         "(expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:<hex>)")

    if not is_oci(text):
        raise bad("it does not start with oci://")
    rest = text[6:]
    host, slash, path = rest.partition("/")
    if not slash or not path:
        raise bad("no repository after the host")
    if not _HOST_RE.fullmatch(host):
        raise bad(f"{host!r} is not a host[:port]")
    if ":" in host and not host.startswith("["):
        port = int(host.rsplit(":", 1)[1])
        if not 0 < port < 65536:
            raise bad(f"port {port} is out of range")
    digest = None
    if "@" in path:
        path, _, digest = path.partition("@")
        if not _DIGEST_RE.fullmatch(digest):
            raise bad(f"{digest!r} is not a manifest digest (sha256: and 64 lowercase hex digits)")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG_RE.fullmatch(tag):
            raise bad(f"{tag!r} is not a valid tag (letters, digits, '_', '.', '-'; at most 128)")
    if not _REPO_RE.fullmatch(path):
        raise bad(f"{path!r} is not a repository name (lowercase letters, digits and . _ - "
                  "separated by /)")
    if tag is None and digest is None:
        raise bad("it names neither a tag nor a digest (Pylon never assumes 'latest')")
    return Reference(host.lower(), path, tag, digest)


def signature_tag(digest: str) -> str:
    """The tag a detached signature of the blob ``digest`` lives under: ``sha256-<hex>.sig``."""
    algorithm, _, hex_ = digest.partition(":")
    return f"{algorithm}-{hex_}.sig"


def plain_http(host: str) -> bool:
    """True if the registry at ``host[:port]`` is reached over http instead of https.

    Loopback hosts are (a local mirror or a test registry: nothing crosses a
    network), and so is any host named in ``PYLON_INSECURE_REGISTRIES``, by
    ``host`` or ``host:port``: an explicit opt-in for a registry without TLS.
    """
    from pylon.blobstore import _is_loopback

    name = urllib.parse.urlsplit(f"//{host}").hostname
    if _is_loopback(name):
        return True
    allowed = {h.strip().lower() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}
    return host.lower() in allowed or (name or "").lower() in allowed


def docker_config_path() -> Path:
    """Where registry credentials are read from: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``."""
    folder = os.environ.get("DOCKER_CONFIG")
    return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"


def _load_docker_config() -> dict[str, Any]:
    """The Docker config file's credentials, in the shape oras's auth backends read.

    What oras lacks and this adds: it ignores ``DOCKER_CONFIG``, and it looks
    ``auths`` keys up verbatim, while Docker also writes them as URLs
    (``https://host:port/v1/``); keys are normalized to ``host[:port]``.
    """
    path = docker_config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raw = {}
    except (OSError, ValueError) as exc:
        raise FetchError(f"cannot read the registry credentials in {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise FetchError(f"cannot read the registry credentials in {path}: not a JSON object")
    auths: dict[str, Any] = {}
    for key, entry in (raw.get("auths") or {}).items():
        if not isinstance(entry, dict):
            continue
        host = urllib.parse.urlsplit(key).netloc if "://" in key else key.split("/", 1)[0]
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                base64.b64decode(auth, validate=True)
            except binascii.Error:
                # Named without the value: the value is a credential.
                raise FetchError(f"the credentials for {host} in {path} are not base64 "
                                 "(the 'auth' field is base64 of user:password)") from None
        auths[host.lower()] = entry
    return {"auths": auths, "credsStore": raw.get("credsStore"),
            "credHelpers": raw.get("credHelpers") or {}}


@dataclass(frozen=True)
class Artifact:
    """A manifest a reference resolved to, checked to hold one accepted layer.

    Attributes:
        reference: the reference pinned to the manifest's digest (its tag kept for readers).
        manifest_digest: sha256 of the manifest bytes as served.
        layer_digest: the one layer's digest (the blob a plan names).
        layer_size: the size the manifest gives the layer.
        layer_media_type: one of :data:`ACCEPTED_LAYER_TYPES`.
    """

    reference: Reference
    manifest_digest: str
    layer_digest: str
    layer_size: int
    layer_media_type: str

    @property
    def is_wasm(self) -> bool:
        """True if the layer is a component (not a signature envelope)."""
        return self.layer_media_type in WASM_LAYER_TYPES


class BlobBody:
    """A blob GET in progress: where its bytes start and a reader of them."""

    def __init__(self, response: Any, start: int, length: int | None):
        self._response = response
        #: The offset of the first byte this body delivers (0 when the registry ignored the Range).
        self.start = start
        #: How many bytes it announces (Content-Length), if it does.
        self.length = length

    def read(self, n: int) -> bytes:
        """At most ``n`` bytes, after at most one read from the socket; b"" at the end.

        Raises:
            BlobError: the connection broke or timed out (urllib3's errors are
                not OSErrors; the blob store expects BlobError or OSError).
        """
        return _read(self._response, n, one=True)

    def close(self) -> None:
        self._response.close()


def _registry_class() -> type:
    """An oras ``Registry`` with what Pylon needs and oras does not do (built on first use).

    * No retries: oras's ``do_request`` retries any failure five times with
      sleeps growing to 83 s; a fetch has a deadline and other sources to try.
    * Timeouts: oras sets none; the session gives every request ``timeout_s``.
    * Redirects (a registry sends blob GETs to its storage) follow the blob
      store's rule (pylon.blobstore.check_redirect: https, or http to http
      on loopback), at most MAX_REDIRECTS; requests drops the credentials
      when the host changes.
    * Basic challenges: oras's token backend answers ``WWW-Authenticate:
      Basic`` by asking the realm for a token, which fails; here a Basic
      challenge gets the Docker config's credentials, a Bearer one the token flow.
    """
    from http.cookiejar import DefaultCookiePolicy

    import requests
    from oras.auth.token import TokenAuth  # type: ignore[import-untyped]
    from oras.provider import Registry  # type: ignore[import-untyped]

    from pylon.blobstore import MAX_REDIRECTS, check_redirect

    class Session(requests.Session):
        def __init__(self, timeout_s: float):
            super().__init__()
            self.timeout_s = timeout_s
            self.max_redirects = MAX_REDIRECTS

        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", self.timeout_s)
            return super().request(method, url, *args, **kwargs)  # type: ignore[arg-type]

        def get_redirect_target(self, resp: requests.Response) -> str | None:
            target = super().get_redirect_target(resp)
            if target is not None:
                check_redirect(resp.url, urllib.parse.urljoin(resp.url, target))
            return target

    class ChallengeAuth(TokenAuth):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.basic = False

        def get_auth_header(self) -> dict[str, str]:
            if self.basic:
                return {"Authorization": f"Basic {self._basic_auth}"}
            return super().get_auth_header()  # type: ignore[no-any-return]

        def authenticate_request(self, original: Any, headers: dict[str, str],
                                 refresh: bool = False) -> tuple[dict[str, str], bool]:
            challenge = original.headers.get("Www-Authenticate", "")
            if challenge.split(" ", 1)[0].lower() == "basic":
                if not getattr(self, "_basic_auth", None):
                    return headers, False
                # Sent with every later request (do_request adds it when token is set).
                self.basic, self.token = True, "basic"
                return {**(headers or {}), **self.get_auth_header()}, True
            self.basic = False
            return super().authenticate_request(original, headers, refresh)  # type: ignore[no-any-return]

    class PylonRegistry(Registry):  # type: ignore[misc]
        # oras's do_request without its retry decorator (functools.wraps keeps the original).
        do_request = Registry.do_request.__wrapped__

        def __init__(self, host: str, timeout_s: float):
            insecure = plain_http(host)
            super().__init__(hostname=host, insecure=insecure)
            self.session = Session(timeout_s)
            # As oras does: no cookies (some registries take one as a browser's and add CSRF checks).
            self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            auth = ChallengeAuth()
            auth.session, auth.prefix, auth._tls_verify = self.session, self.prefix, True
            # Preloaded so oras never reads ~/.docker/config.json on its own.
            auth._auth_config = _load_docker_config()
            self.auth = auth

    return PylonRegistry


def _quiet_oras() -> None:
    """oras logs progress and errors to stderr itself; Pylon reports through its own errors."""
    from oras.logger import setup_logger  # type: ignore[import-untyped]

    setup_logger(quiet=True)


class Client:
    """One registry host, through oras.

    Args:
        host: ``host[:port]``.
        timeout_s: the longest any one request may wait to connect or for data.
    """

    def __init__(self, host: str, *, timeout_s: float = 30.0):
        _quiet_oras()
        self.host = host
        self.scheme = "http" if plain_http(host) else "https"
        self._registry: Any = _registry_class()(host, timeout_s)
        self._has_credentials = False
        for name in (host, host.replace("localhost", "127.0.0.1"), host.replace("127.0.0.1", "localhost")):
            if self._registry.auth._load_auth(name):
                self._has_credentials = True
                break

    # -- requests ----------------------------------------------------------

    def _url(self, ref: Reference, kind: str, target: str) -> str:
        return f"{self.scheme}://{self.host}/v2/{ref.repository}/{kind}/{target}"

    def _request(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        """One request through oras (auth included); registry failures become FetchError."""
        with self._registry_errors(what, FetchError):
            return self._registry.do_request(url, method, **kwargs)

    @contextmanager
    def _registry_errors(self, what: str, error: type[BlobError]) -> Iterator[None]:
        """Turns what oras and requests raise into ``error`` with a message for the user.

        A pull raises FetchError (the blob store then tries the next source), a push BlobError.
        """
        import requests

        try:
            yield
        except BlobError as exc:  # a refused redirect
            raise error(f"{what}: {exc}") from exc
        except ValueError as exc:
            if "authentication" in str(exc):
                raise error(f"{what}: {self._auth_hint(401)}") from None
            raise error(f"{what}: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            raise error(f"{what}: cannot connect to the registry at {self.scheme}://{self.host} "
                        f"({_short_cause(exc)})") from None
        except requests.exceptions.Timeout:
            raise error(f"{what}: the registry at {self.host} did not answer in time") from None
        except requests.exceptions.RequestException as exc:
            raise error(f"{what}: {type(exc).__name__}: {_short_cause(exc)}") from None

    def _auth_hint(self, status: int) -> str:
        config = docker_config_path()
        if self._has_credentials:
            return (f"HTTP {status}: the registry {self.host} refused the credentials for it in "
                    f"{config}")
        return (f"HTTP {status}: the registry {self.host} wants credentials, and {config} has none "
                f"for {self.host} (an 'auths' entry with base64 'user:password' in 'auth'; "
                "DOCKER_CONFIG names another folder)")

    def _fail(self, response: Any, what: str) -> FetchError:
        status = response.status_code
        response.close()
        if status in (401, 403):
            return FetchError(f"{what}: {self._auth_hint(status)}")
        return FetchError(f"{what}: HTTP {status} {response.reason}")

    # -- manifests ---------------------------------------------------------

    def manifest(self, ref: Reference) -> tuple[bytes, str] | None:
        """The manifest bytes ``ref`` names and their digest; None if the registry has none (404).

        Read up to :data:`MAX_MANIFEST_BYTES`. When ``ref`` pins a digest the
        bytes must hash to it (never taken on the registry's word).
        """
        what = f"cannot get the manifest of {ref}"
        response = self._request("GET", self._url(ref, "manifests", ref.target), what,
                                 headers={"Accept": MANIFEST_MEDIA_TYPE}, stream=True)
        try:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise self._fail(response, what)
            data = _read(response, MAX_MANIFEST_BYTES + 1, one=False)
        finally:
            response.close()
        if len(data) > MAX_MANIFEST_BYTES:
            raise FetchError(f"{what}: it is larger than {MAX_MANIFEST_BYTES} bytes")
        digest = digest_bytes(data)
        if ref.digest is not None and digest != ref.digest:
            raise FetchError(f"{what}: the registry served a manifest whose digest is {digest}")
        return data, digest

    def resolve(self, ref: Reference, *, optional: bool = False) -> Artifact | None:
        """The artifact ``ref`` names, checked: an OCI image manifest with one accepted layer.

        Returns None only when ``optional`` and the registry has no such manifest.

        Raises:
            FetchError: unreachable, auth, not found, or a manifest that is not
                one layer of an accepted media type (the message says which).
        """
        got = self.manifest(ref)
        if got is None:
            if optional:
                return None
            raise FetchError(f"the registry has no manifest {ref.target} in {ref.repository} ({ref})")
        data, digest = got
        layer = _one_layer(data, ref)
        return Artifact(ref.at(tag=ref.tag, digest=digest), digest, layer["digest"], layer["size"],
                        layer["mediaType"])

    # -- blobs -------------------------------------------------------------

    def open_blob(self, ref: Reference, digest: str, *, offset: int = 0) -> BlobBody:
        """GETs the blob ``digest`` from ``ref``'s repository, from byte ``offset`` on (HTTP Range).

        The caller checks the bytes; this only checks the response is the blob
        (200, or 206 starting at ``offset``).
        """
        what = f"cannot get blob {digest} from {ref}"
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        response = self._request("GET", self._url(ref, "blobs", digest), what,
                                 headers=headers, stream=True)
        status = response.status_code
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if status == 200:
            return BlobBody(response, 0, length)
        if status == 206 and offset:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                response.close()
                raise FetchError(f"{what}: asked for bytes from {offset} on, the registry answered "
                                 f"Content-Range {response.headers.get('Content-Range')!r}")
            return BlobBody(response, offset, length)
        if status == 404:
            response.close()
            raise FetchError(f"{what}: the registry has no such blob in {ref.repository}")
        raise self._fail(response, what)

    # -- push --------------------------------------------------------------

    def push_wasm(self, file: Path, ref: Reference, *, author: str | None = None) -> Artifact:
        """Pushes a component (or core module) as a Wasm OCI artifact under ``ref``'s tag."""
        data_head = _read_head(file)
        digest = digest_file(file)
        if data_head[:4] != b"\0asm":
            raise BlobError(f"{file} is not a WebAssembly file (no \\0asm header)")
        component = data_head[4:8] != b"\x01\x00\x00\x00"  # a core module is version 1
        config: dict[str, Any] = {
            "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "architecture": "wasm",
            "os": "wasip2" if component else "wasip1",
            "layerDigests": [digest],
        }
        if author:
            config["author"] = author
        if component:
            imports, exports = _component_interfaces(file)
            config["component"] = {"exports": exports, "imports": imports}
        return self._push(file, WASM_LAYER_TYPES[0], json.dumps(config, sort_keys=True).encode(),
                          WASM_CONFIG_MEDIA_TYPE, ref, digest)

    def push_signature(self, file: Path, ref: Reference, subject: str) -> Artifact:
        """Pushes a DSSE envelope as the signature of blob ``subject``, under ``sha256-<hex>.sig``."""
        target = ref.at(tag=signature_tag(subject))
        return self._push(file, DSSE_MEDIA_TYPE, b"{}", EMPTY_CONFIG_MEDIA_TYPE, target, digest_file(file))

    def _push(self, file: Path, layer_type: str, config: bytes, config_type: str,
              ref: Reference, digest: str) -> Artifact:
        if ref.tag is None or ref.digest is not None:
            raise PlanError(f"push needs a tag and no digest: {ref} (oci://HOST/REPO:TAG)")
        what = f"cannot push {file} to {ref}"
        with tempfile.TemporaryDirectory(prefix="pylon-push-") as tmp:
            # oras splits "path:media/type" at the last colon and titles the
            # layer with the file's name: a link with a plain name keeps both right.
            name = re.sub(r"[^A-Za-z0-9._-]", "_", file.name) or "blob"
            link = Path(tmp) / name
            link.symlink_to(file.resolve())
            config_file = Path(tmp) / "config.json"
            config_file.write_bytes(config)
            with self._registry_errors(what, BlobError):
                response = self._registry.push(
                    f"{self.host}/{ref.repository}:{ref.tag}", files=[f"{link}:{layer_type}"],
                    manifest_config=f"{config_file}:{config_type}", disable_path_validation=True,
                    quiet=True)
        manifest_digest = response.headers.get("Docker-Content-Digest", "")
        if not _DIGEST_RE.fullmatch(manifest_digest):
            raise BlobError(f"{what}: the registry did not say the manifest's digest")
        return Artifact(ref.at(tag=ref.tag, digest=manifest_digest), manifest_digest, digest,
                        file.stat().st_size, layer_type)


def _read(response: Any, n: int, *, one: bool) -> bytes:
    """Reads from a streamed requests response, turning urllib3's errors into BlobError."""
    import urllib3.exceptions

    try:
        data: bytes = response.raw.read1(n) if one else response.raw.read(n, decode_content=True)
        return data
    except urllib3.exceptions.ReadTimeoutError:
        raise BlobError("timed out: nothing arrived in time") from None
    except urllib3.exceptions.HTTPError as exc:
        raise BlobError(f"interrupted: {_short_cause(exc)}") from None


def _one_layer(data: bytes, ref: Reference) -> dict[str, Any]:
    """The one layer of a manifest, after the checks every consumer makes."""
    where = f"the manifest of {ref}"
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise FetchError(f"{where} is not JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise FetchError(f"{where} is not a JSON object")
    media_type = manifest.get("mediaType", MANIFEST_MEDIA_TYPE)
    if media_type != MANIFEST_MEDIA_TYPE:
        raise FetchError(f"{where} is a {media_type!r}, not an OCI image manifest "
                         f"({MANIFEST_MEDIA_TYPE}): an index or a Docker image is not a Pylon artifact")
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        count = len(layers) if isinstance(layers, list) else 0
        raise FetchError(f"{where} has {count} layers; a Wasm artifact has exactly one")
    layer = layers[0]
    if not isinstance(layer, dict):
        raise FetchError(f"{where}: its layer is not a JSON object")
    if layer.get("mediaType") not in ACCEPTED_LAYER_TYPES:
        accepted = ", ".join(sorted(ACCEPTED_LAYER_TYPES))
        raise FetchError(f"{where}: its layer's media type {layer.get('mediaType')!r} is not one "
                         f"Pylon accepts ({accepted})")
    if not isinstance(layer.get("digest"), str) or not _DIGEST_RE.fullmatch(layer["digest"]):
        raise FetchError(f"{where}: its layer's digest {layer.get('digest')!r} is not sha256:<hex>")
    size = layer.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise FetchError(f"{where}: its layer's size {size!r} is not a whole number of bytes")
    return layer


def _short_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without its object reprs."""
    inner: BaseException = exc
    while inner.__context__ is not None or inner.__cause__ is not None:
        nxt = inner.__cause__ or inner.__context__
        assert nxt is not None
        inner = nxt
    text = str(inner) or type(inner).__name__
    if "Connection refused" in str(exc):
        return "connection refused"
    return re.sub(r"<[^>]*>: ", "", text)[:200]


def _read_head(file: Path) -> bytes:
    try:
        with open(file, "rb") as f:
            return f.read(8)
    except OSError as exc:
        raise BlobError(f"cannot read {file}: {exc.strerror or exc}") from exc


def _component_interfaces(file: Path) -> tuple[list[str], list[str]]:
    """A component's imports and exports (``wasi:io/streams@0.2.0``...), read with wasm-tools.

    ``wasm-tools component wit --json`` takes ~0.1-0.4 s even for the 36 MiB
    guest. Without wasm-tools (it comes with the ``build`` extra) both lists
    are left empty: the config is descriptive, nothing checks it.
    """
    from pylon.build.toolchain import wasm_tools
    from pylon.errors import BuildError

    try:
        tool = wasm_tools()
        out = subprocess.run([tool, "component", "wit", "--json", str(file)],
                             capture_output=True, check=True, timeout=60).stdout
        doc = json.loads(out)
    except (BuildError, OSError, subprocess.SubprocessError, ValueError):
        return [], []
    packages = doc.get("packages", [])
    interfaces = doc.get("interfaces", [])
    worlds = doc.get("worlds", [])
    # The component's own world is the one wasm-tools puts in package root:component.
    world = next((w for w in worlds if packages[w["package"]]["name"] == "root:component"),
                 worlds[-1] if worlds else None)
    if world is None:
        return [], []

    def names(items: dict[str, Any]) -> list[str]:
        found = []
        for key, item in items.items():
            iface = item.get("interface") if isinstance(item, dict) else None
            if iface is None:
                found.append(key)
                continue
            entry = interfaces[iface["id"]]
            package = packages[entry["package"]]["name"]
            ns, _, version = package.partition("@")
            found.append(f"{ns}/{entry['name']}" + (f"@{version}" if version else "")
                         if entry.get("name") else key)
        return found

    return names(world.get("imports", {})), names(world.get("exports", {}))


@contextmanager
def client(host: str, *, timeout_s: float = 30.0) -> Iterator[Client]:
    """A :class:`Client` whose connections are closed on leaving."""
    c = Client(host, timeout_s=timeout_s)
    try:
        yield c
    finally:
        c._registry.session.close()
