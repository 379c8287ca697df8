"""A real S3 API on 127.0.0.1 for tests: moto's server in a thread, one bucket, and the standard
AWS_* variables that point every client (s3fs in this process, img2dataset's child processes,
the CLIs run as subprocesses) at it.

Credentials are checked, as a real store does: moto's IAM makes a user and an access key when the
server starts, and only that key is let in afterwards. The secret doubles as a canary: tests check
that it never shows in what the toolkit prints or writes.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass

from moto.server import ThreadedMotoServer


@dataclass
class S3Server:
    """moto in server mode on a free loopback port."""

    bucket: str = "cloob-test-0"
    key_id: str = ""
    secret: str = ""
    _server: ThreadedMotoServer | None = None
    _buckets: itertools.count = itertools.count(1)

    def start(self) -> S3Server:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        self._make_credentials()
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def _make_credentials(self) -> None:
        """An IAM user allowed everything, and its key; from then on moto checks every request."""
        import boto3
        import requests

        # The next three requests go unchecked (moto's switch for turning authentication on).
        requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"3", timeout=10)
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
            region_name="us-east-1",
        )
        iam.create_user(UserName="cloob")
        key = iam.create_access_key(UserName="cloob")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="cloob", PolicyName="all", PolicyDocument=json.dumps(policy))
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.get_host_and_port()
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """What a user sets to reach this server (botocore reads AWS_ENDPOINT_URL itself)."""
        return {
            "AWS_ACCESS_KEY_ID": self.key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def list_keys(self, prefix: str = "") -> list[str]:
        """Every object key under `prefix`, sorted."""
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def new_bucket(self) -> str:
        """Make a fresh, empty bucket and make it `self.bucket` (each test gets its own)."""
        self.bucket = f"cloob-test-{next(self._buckets)}"
        self.client().create_bucket(Bucket=self.bucket)
        return self.bucket

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# How a store can be unusable, and the words the one `error:` line must contain.
BROKEN_STORES = [
    ("missing-bucket", "bucket does not exist"),
    ("wrong-secret", "access denied"),
    ("unknown-key", "access denied"),
    ("unreachable-endpoint", "cannot be reached"),
]


def break_store(s3: S3Server, monkeypatch, case: str, key: str) -> str:
    """Break one thing about the store (a `BROKEN_STORES` case); the URL of `key` to use."""
    if case == "missing-bucket":
        return f"s3://no-such-bucket/{key}"
    env = {
        "wrong-secret": ("AWS_SECRET_ACCESS_KEY", "not-" + s3.secret),
        "unknown-key": ("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY0000"),
        "unreachable-endpoint": ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
    }
    monkeypatch.setenv(*env[case])
    return s3.url(key)
