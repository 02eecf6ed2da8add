"""An integrator signs its own test token with the development key, as
another language's JWT code would, and calls a service with it.

The development issuer's key (`passerelle up` writes it as PKCS#8 v1, the
form OpenSSL-based libraries read) is loaded with Python's `cryptography`;
the token is an EdDSA JWT (RFC 8037) built by hand.

Usage: own_token.py GENERATED_DIR DATA_DIR
"""

import base64
import json
import sys
import time

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, sys.argv[1])
from passerelle.v1 import pilotage_pb2, pilotage_pb2_grpc  # noqa: E402

DATA_DIR = sys.argv[2]


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(key, claims):
    header = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = key.sign(f"{header}.{payload}".encode())
    return f"{header}.{payload}.{b64url(signature)}"


def main():
    with open(f"{DATA_DIR}/keys/dev-issuer.key.pem", "rb") as pem:
        key = serialization.load_pem_private_key(pem.read(), password=None)
    now = int(time.time())
    claims = {
        "iss": "passerelle-dev",
        "sub": "copil-python-own-token",
        "aud": "passerelle-pilotage",
        "iat": now,
        "exp": now + 300,
        "institution": "pilotage",
        "role": "steering",
    }
    pilotage = pilotage_pb2_grpc.PilotageServiceStub(grpc.insecure_channel("127.0.0.1:50053"))
    answer = pilotage.GetDashboard(
        pilotage_pb2.GetDashboardRequest(),
        metadata=[("authorization", f"Bearer {jwt(key, claims)}")],
    )
    assert answer.dashboard.min_cell_size == 11, answer.dashboard.min_cell_size
    # The same token signed by any other key is refused.
    stranger = Ed25519PrivateKey.generate()
    try:
        pilotage.GetDashboard(
            pilotage_pb2.GetDashboardRequest(),
            metadata=[("authorization", f"Bearer {jwt(stranger, claims)}")],
        )
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.code()
    else:
        raise SystemExit("a token signed by an unknown key was accepted")
    print("own token: ok")


if __name__ == "__main__":
    main()
