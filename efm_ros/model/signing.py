"""Signed model versions: only a trainer holding the signing key can make a version that a robot
will run (Ed25519, the ``cryptography`` package).

``manifest.json`` lists the sha256 of every file of a model directory, so a signature over the
manifest's bytes covers the whole model. The signature lives next to it:

    MODEL_DIR/signature.json   {"algorithm": "ed25519", "key_id": "<sha256 of the public key, 16 hex>",
                                "signature": "<base64 of the 64-byte signature of manifest.json>"}

Keys (PEM files; the private key is written 0600):

    efm-ros keygen --out keys/        # keys/efm_ros_signing.pem (trainer), keys/efm_ros_signing.pub (robots)

The trainer signs each version before it becomes visible (``export_model(signing_key=...)``,
``efm-ros improve --signing-key``, ``efm-ros export --signing-key``). A policy node given
``trusted_keys`` loads only versions signed by one of them and, given ``model_root``, only from
under that directory (:func:`check_trusted`); anything else is refused and counted.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
from pathlib import Path

from efm_ros.model.manifest import MANIFEST_NAME, ManifestError

SIGNATURE_NAME = "signature.json"
PRIVATE_NAME, PUBLIC_NAME = "efm_ros_signing.pem", "efm_ros_signing.pub"


class SignatureError(ManifestError):
    """A model directory that is unsigned, signed by an untrusted key, tampered with, or outside the trusted root."""


def generate_key(out_dir: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """A new Ed25519 key pair in ``out_dir``: (private PEM, mode 0600; public PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out_dir = Path(out_dir)
    private, public = out_dir / PRIVATE_NAME, out_dir / PUBLIC_NAME
    if private.exists() and not overwrite:
        raise FileExistsError(f"{private} exists (overwrite=True / --force replaces it)")
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _public_raw(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    return hashlib.sha256(_public_raw(public_key)).hexdigest()[:16]


def load_public_key(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise SignatureError(f"{path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(f"{path}: not an Ed25519 public key")
    return key


def sign_model(model_dir: str | Path, private_key: str | Path) -> dict:
    """Sign ``model_dir/manifest.json`` with the PEM private key; writes signature.json."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    model_dir = Path(model_dir)
    key = serialization.load_pem_private_key(Path(private_key).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_key}: not an Ed25519 private key")
    manifest = (model_dir / MANIFEST_NAME).read_bytes()
    record = {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
              "signature": base64.b64encode(key.sign(manifest)).decode()}
    (model_dir / SIGNATURE_NAME).write_text(json.dumps(record, indent=1) + "\n")
    return record


def verify_signature(model_dir: str | Path, trusted_keys) -> str:
    """The key id that signed ``model_dir``; raises SignatureError if it is unsigned, tampered
    with, or signed by none of ``trusted_keys`` (public key objects or PEM paths)."""
    from cryptography.exceptions import InvalidSignature

    model_dir = Path(model_dir)
    keys = [load_public_key(k) if isinstance(k, (str, Path)) else k for k in trusted_keys]
    sig_path = model_dir / SIGNATURE_NAME
    if not sig_path.is_file():
        raise SignatureError(f"{model_dir}: unsigned ({SIGNATURE_NAME} missing) and trusted keys are configured")
    try:
        record = json.loads(sig_path.read_text())
        signature = base64.b64decode(record["signature"], validate=True)
        claimed = str(record.get("key_id", ""))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{sig_path}: unreadable signature ({exc})") from exc
    if record.get("algorithm") != "ed25519":
        raise SignatureError(f"{sig_path}: algorithm {record.get('algorithm')!r}, expected ed25519")
    manifest = (model_dir / MANIFEST_NAME).read_bytes()
    for key in keys:
        try:
            key.verify(signature, manifest)
            return key_id(key)
        except InvalidSignature:
            continue
    raise SignatureError(f"{model_dir}: the signature (key {claimed or '?'}) does not verify with any of the "
                         f"{len(keys)} trusted keys: signed by another key, or manifest.json was changed")


def check_trusted(model_dir: str | Path, trusted_keys=(), model_root: str | Path | None = None) -> None:
    """Refuse a model directory outside ``model_root`` (after resolving links) or, with trusted
    keys configured, one whose signature does not verify. No keys and no root: nothing to check."""
    model_dir = Path(model_dir)
    if model_root:
        root = Path(model_root).resolve()
        if not model_dir.resolve().is_relative_to(root):
            raise SignatureError(f"{model_dir}: outside the trusted model root {root}")
    if trusted_keys:
        verify_signature(model_dir, trusted_keys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="efm-ros keygen", description="Create the Ed25519 key pair that signs model "
                                "versions: the private key stays with the trainer, the public key goes to the robots "
                                "(policy parameter trusted_keys).")
    p.add_argument("--out", default="keys", help="directory for efm_ros_signing.pem / .pub (default: keys)")
    p.add_argument("--force", action="store_true", help="replace an existing key pair")
    args = p.parse_args(argv)
    private, public = generate_key(args.out, overwrite=args.force)
    print(f"private key (trainer, keep secret): {private}\npublic key (robots: trusted_keys): {public}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
