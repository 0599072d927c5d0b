"""A real S3-compatible server for the S3 store's tests: moto's standalone server (``moto[server]``)
in its own process on loopback, one per test session.

It checks request signatures: an IAM user with an ``s3:*`` policy is made first, then moto's
"auth" is switched on, so every request must be SigV4-signed with that user's key (a wrong secret
is a 403, see ``test_a_wrong_secret_is_refused``). moto cannot check query-string signatures (a
presigned URL has no ``Authorization`` header, which its checker needs), so ``unchecked()``
switches checking off while a test downloads a presigned URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx2 as httpx
import pytest

from imagegate.config import StorageConfig
from imagegate.storage import UrlSigner
from imagegate.storage.s3 import S3BlobStore
from tests.harness import free_port

BUCKET = "imagegate-test"
REGION = "eu-west-1"
SIGNER = UrlSigner(b"s3-test-secret")
PUBLIC_URL = "http://testserver"


@dataclass
class S3Server:
    endpoint: str
    access_key_id: str
    secret_access_key: str
    bucket: str = BUCKET
    region: str = REGION

    def config(self, **extra: Any) -> StorageConfig:
        return StorageConfig(endpoint_url=self.endpoint, region=self.region, access_key_id=self.access_key_id,
                             secret_access_key=self.secret_access_key, **extra)

    def store(self, prefix: str | None = None, **extra: Any) -> S3BlobStore:
        """A store on a fresh prefix of the test bucket (each test sees only its own objects)."""
        return S3BlobStore(self.bucket, new_prefix() if prefix is None else prefix, self.config(**extra), PUBLIC_URL,
                           SIGNER)

    def env(self) -> dict[str, str]:
        """The AWS SDK variables a gateway process reads this server's settings from."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region,
                "AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}

    def set_checking(self, on: bool) -> None:
        r = httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0" if on else b"inf",
                       headers={"Content-Type": "text/plain"})
        assert r.status_code == 200, r.text

    @contextlib.contextmanager
    def unchecked(self) -> Iterator[None]:
        """Signature checking off, for downloading presigned URLs (see the module docstring)."""
        self.set_checking(False)
        try:
            yield
        finally:
            self.set_checking(True)


def new_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with log_path.open("ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_ready(endpoint, proc, log_path)
        server = S3Server(endpoint, *_iam_user(endpoint))
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=server.access_key_id,
                     aws_secret_access_key=server.secret_access_key).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})  # type: ignore[typeddict-item]
        server.set_checking(True)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _wait_ready(endpoint: str, proc: subprocess.Popen[bytes], log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{endpoint}/moto-api/data.json", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not start:\n{log_path.read_text()}")


def _iam_user(endpoint: str) -> tuple[str, str]:
    """An IAM user allowed ``s3:*`` and its access key (made while moto still accepts anyone)."""
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                       aws_secret_access_key="setup")
    iam.create_user(UserName="imagegate")
    policy = iam.create_policy(PolicyName="s3-all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    iam.attach_user_policy(UserName="imagegate", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="imagegate")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]
