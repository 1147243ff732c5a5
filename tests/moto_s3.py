"""A real S3 endpoint for tests: moto's server mode in its own process on 127.0.0.1 (a free port).

The server starts open, the fixture creates an IAM user with an access key allowed `s3:*` and a bucket,
then switches authentication on (moto's `/moto-api/reset-auth`): from then on a request signed with any
other key is refused, as a real S3 would refuse it. Credentials reach DVC through the environment only
(`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), never through a committed config file.
"""

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import free_port

BUCKET = "distill-shared"
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto S3 server: its endpoint, a bucket and the one access key it accepts."""

    endpoint: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """Environment variables that give DVC (and boto3) these credentials and nothing else."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self):  # noqa: ANN201
        """A boto3 S3 client with the valid key."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=REGION,
        )

    def keys(self, prefix: str = "") -> list[str]:
        """Every object key in the bucket under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def isolate_aws_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """No AWS settings from this machine: no keys, no profile files, no instance-metadata lookups."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server with one bucket and authentication on (see the module docstring)."""
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start:\n{log.read_text()}") from None
                time.sleep(0.2)
        admin = {"endpoint_url": endpoint, "region_name": REGION}
        admin |= {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="distill")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="distill", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="distill")["AccessKey"]
        boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
        # From now on every request must be signed with the user's key.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).read()
        yield S3Server(endpoint, BUCKET, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
