"""GCS test doubles: an in-process emulator on loopback and a freshly made service-account key."""

from __future__ import annotations

import json
from contextlib import contextmanager

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def service_account(project: str, key=None) -> dict:
    """A service-account JSON (as a dict) whose RSA key really signs; nothing behind it exists."""
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": project, "private_key_id": "0123456789abcdef" * 2 + "01234567",
            "private_key": pem, "client_email": f"renderer@{project}.iam.gserviceaccount.com", "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token"}


def service_account_json(project: str) -> str:
    return json.dumps(service_account(project))


@contextmanager
def gcs_emulator(bucket: str):
    """gcp-storage-emulator in this process on an ephemeral loopback port; yields that port."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        yield server._api._httpd.server_address[1]
    finally:
        server.stop()
