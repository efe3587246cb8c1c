"""Start and stop a single-process SeaweedFS (`weed mini`) for development and tests.

Bound to 127.0.0.1, telemetry off, bucket auto-creation off, its own data directory, generated credentials,
free ports for every component. Stopped by its PID.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.exceptions
from botocore.config import Config

from ..sources.seaweedfs import weed_binary
from ..supervise import end_process
from .ports import free_port


@dataclass
class SeaweedFS:
    data_dir: Path
    s3_port: int
    filer_port: int
    master_port: int
    volume_port: int
    admin_port: int
    access_key: str = field(default_factory=lambda: "gclo" + secrets.token_hex(6))
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @classmethod
    def prepare(cls, data_dir: str | os.PathLike[str], s3_port: int | None = None,
                access_key: str | None = None, secret_key: str | None = None) -> "SeaweedFS":
        taken: set[int] = set()
        if s3_port:
            taken.update({s3_port, s3_port + 10000})
        server = cls(Path(data_dir), s3_port or free_port(True, taken), free_port(True, taken),
                     free_port(True, taken), free_port(True, taken), free_port(True, taken))
        if access_key:
            server.access_key = access_key
        if secret_key:
            server.secret_key = secret_key
        return server

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def filer(self) -> str:
        return f"127.0.0.1:{self.filer_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def credentials_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def command(self) -> list[str]:
        return [weed_binary(), "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false", f"-admin.port={self.admin_port}", "-webdav=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false", f"-s3.port={self.s3_port}",
                f"-master.port={self.master_port}", f"-filer.port={self.filer_port}",
                f"-volume.port={self.volume_port}"]

    def start(self, ready_timeout_s: float = 60.0) -> "SeaweedFS":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / "weed.log"
        env = {**os.environ, **self.credentials_env()}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> object:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10,
                          s3={"addressing_style": "path"}))

    def wait_ready(self, timeout_s: float) -> None:
        """Until the S3 API answers and a write goes through (the first write needs the volume server)."""
        deadline = time.monotonic() + timeout_s
        client = self.client()
        probe = "gclo-ready-probe"
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with code {self.process.returncode}; see {self.log_path}")
            try:
                try:
                    client.create_bucket(Bucket=probe)
                except botocore.exceptions.ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyExists",
                                                                         "BucketAlreadyOwnedByYou"):
                        raise
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                last = exc
                time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS did not become ready in {timeout_s:.0f}s ({last}); see {self.log_path}")

    def create_bucket(self, name: str) -> None:
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                raise

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM by PID, then SIGKILL after `timeout_s`; waits, so the ports can be reused at once."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        end_process(proc, timeout_s)
        # weed leaves its S3 unix socket behind in the temp directory
        Path(tempfile.gettempdir(), f"seaweedfs-s3-{self.s3_port}.sock").unlink(missing_ok=True)
