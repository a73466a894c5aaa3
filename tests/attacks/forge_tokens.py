#!/usr/bin/env python3
"""Forges JWTs for Homeroom's token-attack tests with an implementation independent of ours (Python's
standard library only: hmac, hashlib, base64, json).

Usage: forge_tokens.py JWT_SECRET NODE_SECRET NOW_SECONDS  → prints a JSON object {name: token}.
Every token except those named "valid_*" must be refused by the edge (and media tokens by the node).
"""
import base64
import hashlib
import hmac
import json
import sys


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode(header: dict, payload: dict, key: bytes, digest=hashlib.sha256, signature: str | None = None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    if signature is None:
        signature = b64url(hmac.new(key, signing_input.encode(), digest).digest())
    return f"{signing_input}.{signature}"


def main() -> None:
    secret = sys.argv[1].encode()
    node_secret = sys.argv[2].encode()
    now = int(sys.argv[3])
    hs256 = {"alg": "HS256", "typ": "JWT"}
    admin = {"sub": "mallory", "name": "Mallory", "role": "admin", "exp": now + 600}
    student = {"sub": "mallory", "name": "Mallory", "role": "student", "exp": now + 600}
    valid_student = encode(hs256, student, secret)
    head, _, sig = valid_student.split(".")
    escalated_payload = b64url(json.dumps({**student, "role": "admin"}).encode())
    perms_payload = b64url(json.dumps({**student, "perms": {"moderate": True}}).encode())
    tokens = {
        # Sanity: these two must be accepted, or the test proves nothing.
        "valid_student": valid_student,
        "valid_admin": encode(hs256, admin, secret),
        "alg_none": encode({"alg": "none", "typ": "JWT"}, admin, secret, signature=""),
        "alg_none_capitalised": encode({"alg": "None", "typ": "JWT"}, admin, secret, signature=""),
        "wrong_key": encode(hs256, admin, b"not-the-secret"),
        "hs512_with_the_right_key": encode({"alg": "HS512", "typ": "JWT"}, admin, secret, hashlib.sha512),
        # HS/RS confusion: an "RS256" token whose signature is an HMAC with the shared secret.
        "rs256_confusion": encode({"alg": "RS256", "typ": "JWT"}, admin, secret),
        "jku_header_other_key": encode({"alg": "HS256", "jku": "http://127.0.0.1:9/keys"}, admin, b"attacker"),
        "expired": encode(hs256, {**admin, "exp": now - 60}, secret),
        "not_yet_valid": encode(hs256, {**admin, "nbf": now + 3600}, secret),
        "no_exp": encode(hs256, {"sub": "mallory", "role": "admin"}, secret),
        "exp_as_string": encode(hs256, {**admin, "exp": str(now + 600)}, secret),
        "no_sub": encode(hs256, {"role": "admin", "exp": now + 600}, secret),
        "empty_sub": encode(hs256, {**admin, "sub": ""}, secret),
        "unknown_role": encode(hs256, {**admin, "role": "superuser"}, secret),
        "role_escalation_tampered": f"{head}.{escalated_payload}.{sig}",
        "perms_escalation_tampered": f"{head}.{perms_payload}.{sig}",
        "truncated_signature": valid_student[:-4],
        "garbage": "not.a.jwt",
        "user_signed_with_node_secret": encode(hs256, admin, node_secret),
    }
    # Service tokens (heartbeats): valid only with NODE_SECRET.
    node = {"sub": "evil-node", "exp": now + 600}
    tokens.update(
        {
            "valid_node": encode(hs256, node, node_secret),
            "node_wrong_key": encode(hs256, node, secret),
            "node_alg_none": encode({"alg": "none"}, node, node_secret, signature=""),
            # Service tokens tolerate 30 s of clock skew past exp (SERVICE_SKEW_SECS): this one is well past.
            "node_expired": encode(hs256, {**node, "exp": now - 120}, node_secret),
        }
    )
    # Media tokens (for a node named "attack-node"): valid only with NODE_SECRET, for that node, unexpired.
    media = {
        "sub": "mallory",
        "room": "default/vault",
        "node": "attack-node",
        "perms": {"audio": True, "video": True, "screen": True, "subscribe": True},
        "exp": now + 300,
    }
    tokens.update(
        {
            "media_valid": encode(hs256, media, node_secret),
            "media_wrong_key": encode(hs256, media, secret),
            "media_alg_none": encode({"alg": "none"}, media, node_secret, signature=""),
            "media_expired": encode(hs256, {**media, "exp": now - 1}, node_secret),
            "media_other_node": encode(hs256, {**media, "node": "some-other-node"}, node_secret),
            "media_tampered_perms": ".".join(
                [
                    encode(hs256, {**media, "perms": {**media["perms"], "screen": False}}, node_secret).split(".")[0],
                    b64url(json.dumps(media).encode()),
                    encode(hs256, {**media, "perms": {**media["perms"], "screen": False}}, node_secret).split(".")[2],
                ]
            ),
            # The edge's control token: only NODE_SECRET-signed with sub "edge" may moderate.
            "control_valid": encode(hs256, {"sub": "edge", "exp": now + 60}, node_secret),
            "control_wrong_key": encode(hs256, {"sub": "edge", "exp": now + 60}, secret),
            "control_user_token": encode(hs256, admin, secret),
            # Media tokens share NODE_SECRET: one held by a participant whose user id is "edge" (or a node's
            # id) must be neither a control token nor a heartbeat token.
            "media_sub_edge": encode(hs256, {**media, "sub": "edge"}, node_secret),
            "media_sub_node": encode(hs256, {**media, "sub": "evil-node"}, node_secret),
        }
    )
    print(json.dumps(tokens))


if __name__ == "__main__":
    main()
