"""``composectl push FILE oci://HOST[:PORT]/REPO:TAG [--signature SIG]``: a cap or guest to a registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pylon.cli.console import out, say

__all__ = ["push", "register"]


def push(
    file: Annotated[Path, typer.Argument(
        metavar="FILE", help="A cap or guest component (.wasm).", exists=True, dir_okay=False)],
    reference: Annotated[str, typer.Argument(
        metavar="REFERENCE", help="Where to push it: oci://HOST[:PORT]/REPO:TAG.")],
    signature: Annotated[Path | None, typer.Option(
        help="A detached signature of FILE (a DSSE envelope, from composectl sign): pushed beside "
             "it under the tag sha256-<hex of FILE>.sig.", exists=True, dir_okay=False)] = None,
    author: Annotated[str | None, typer.Option(help="The author recorded in the artifact's config.")
                      ] = None,
) -> None:
    """Push FILE as a Wasm OCI artifact (one application/wasm layer) and print its manifest digest.

    The layer digest is FILE's sha256, the digest a plan names; the printed
    source (pinned by the manifest digest) can go in a plan as is. Registries
    on loopback are reached over http, others over https (PYLON_INSECURE_REGISTRIES
    lists exceptions); credentials come from the Docker config file
    ($DOCKER_CONFIG/config.json or ~/.docker/config.json).
    """
    from pylon import oci

    ref = oci.parse_reference(reference)
    with oci.client(ref.host) as client:
        artifact = client.push_wasm(file, ref, author=author)
        say(f"pushed {file} ({artifact.layer_size} bytes, layer {artifact.layer_digest}) to {ref}")
        if signature is not None:
            signed = client.push_signature(signature, ref, artifact.layer_digest)
            say(f"pushed its signature {signed.layer_digest} to {signed.reference.at(tag=signed.reference.tag)}")
    say(f"plan source: {artifact.reference}")
    out.print(artifact.manifest_digest)


def register(app: typer.Typer) -> None:
    """Adds ``push`` to the top-level app."""
    app.command("push")(push)
