"""Remote storage through a real S3-compatible server (moto_server on 127.0.0.1), configured with
the commands the README documents, and a bare git repository as the git remote."""

import hashlib
import json
import os
import socket
import subprocess
import time

import boto3
import pytest

from bench.workspace import git_env
from tests.helpers import dvc, free_port, ran_stages, run

pytestmark = pytest.mark.slow  # end to end: the real dvc CLI and an S3 server

BUCKET = "tolstoy-test"
CACHED_OUTPUTS = [
    "data/raw",
    "data/clean/docs.parquet",
    "models/tokenizer",
    "data/tokens",
    "models/model",
    "models/checkpoints",
]


class S3Server:
    """moto_server in a subprocess. With `auth`, only the credentials it hands out are accepted."""

    def __init__(self, auth=False):
        self.port, self.auth = free_port(), auth
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
        if self.auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        self.process = subprocess.Popen(
            ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start")
                time.sleep(0.2)
        self.key_id, self.secret = "testing", "testing"
        if self.auth:  # the three unauthenticated actions make a user with a key and a policy
            iam = boto3.client("iam", **self.client_args())
            iam.create_user(UserName="dvc")
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            iam.put_user_policy(UserName="dvc", PolicyName="all", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName="dvc")["AccessKey"]
            self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.s3().create_bucket(Bucket=BUCKET)

    def client_args(self):
        return dict(
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=getattr(self, "key_id", "testing"),
            aws_secret_access_key=getattr(self, "secret", "testing"),
        )

    def s3(self):
        return boto3.client("s3", **self.client_args())

    def keys(self):
        return [o["Key"] for o in self.s3().list_objects_v2(Bucket=BUCKET).get("Contents", [])]

    def stop(self):
        self.process.terminate()
        self.process.wait()

    def env(self, base_env):
        return dict(base_env, AWS_ACCESS_KEY_ID=self.key_id, AWS_SECRET_ACCESS_KEY=self.secret)


@pytest.fixture
def s3():
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def repo(reproduced_copy):
    return reproduced_copy[0]


def use_s3(directory, server, env):
    """The README's commands for an S3-compatible remote."""
    dvc(directory, "remote", "modify", "s3", "url", f"s3://{BUCKET}/dvc", env=env)
    dvc(directory, "remote", "modify", "s3", "endpointurl", server.endpoint, env=env)
    dvc(directory, "remote", "default", "s3", env=env)


def clone(bare, directory, env):
    run(["git", "clone", "-q", str(bare), str(directory)], bare.parent, env=env)
    return directory


def publish(directory, env):
    """Commit the remote config and push to a new bare git repository beside the repo."""
    bare = directory.parent / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], directory, env=env)
    run(["git", "commit", "-q", "-am", "use s3"], directory, env=env)
    run(["git", "remote", "add", "origin", str(bare)], directory, env=env)
    run(["git", "push", "-q", "origin", "main"], directory, env=env)
    return bare


def cache_is_intact(directory):
    """Every file in the DVC cache still hashes to its own name."""
    files = [p for p in (directory / ".dvc/cache/files/md5").rglob("*") if p.is_file()]
    assert files
    for path in files:
        name = path.parent.name + path.name.removesuffix(".dir")
        assert hashlib.md5(path.read_bytes()).hexdigest() == name, path


def test_push_then_a_fresh_clone_pulls_everything_and_has_nothing_to_do(repo, s3):
    env = s3.env(git_env())
    use_s3(repo, s3, env)
    assert (
        f"remote 's3' (s3://{BUCKET}/dvc at {s3.endpoint}) answers"
        in run(["python", "tools/check_remote.py"], repo, env=env).stdout
    )
    pushed = dvc(repo, "push", env=env)
    assert "pushed" in pushed.stdout
    assert len(s3.keys()) > 10
    bare = publish(repo, env)

    other = clone(bare, repo.parent / "other", env)
    dvc(other, "pull", env=env)
    for output in CACHED_OUTPUTS:
        assert (other / output).exists(), output
    assert "up to date" in dvc(other, "status", env=env).stdout
    assert ran_stages(dvc(other, "repro", env=env).stdout) == []
    assert ran_stages(dvc(other, "repro", "-f", "-s", "sample", env=env).stdout) == ["sample"]
    assert (other / "metrics/samples.md").read_text() == (repo / "metrics/samples.md").read_text()

    # experiments travel through the git remote
    dvc(repo, "exp", "run", "-n", "warm", "-S", "sample.seed=7", env=env)  # a param only sample reads: a short run
    dvc(repo, "exp", "push", "origin", "warm", env=env)
    dvc(other, "exp", "pull", "origin", "warm", env=env)
    table = json.loads(dvc(other, "exp", "show", "--json", env=env).stdout)
    warm = next(e for commit in table for e in (commit.get("experiments") or []) if e["name"] == "warm")
    data = warm["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["sample"]["seed"] == 7
    assert "bits_per_char" in data["metrics"]["metrics/eval.json"]["data"]


def test_wrong_credentials_name_the_remote(repo):
    server = S3Server(auth=True)
    server.start()
    try:
        env = git_env(AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1", AWS_SECRET_ACCESS_KEY="wrong")
        use_s3(repo, server, env)
        assert run(["dvc", "push"], repo, check=False, env=env).returncode != 0  # DVC says "Forbidden", not where
        result = run(["python", "tools/check_remote.py"], repo, check=False, env=env)
        assert result.returncode == 1
        assert f"remote 's3' (s3://{BUCKET}/dvc at {server.endpoint}) cannot be used" in result.stderr
        assert "Forbidden" in result.stderr and "AWS_ACCESS_KEY_ID" in result.stderr
        assert server.keys() == []  # nothing was uploaded
    finally:
        server.stop()


def test_push_to_a_stopped_server_fails_cleanly_and_a_retry_completes(repo, s3):
    env = s3.env(git_env())
    use_s3(repo, s3, env)
    s3.stop()
    result = run(["dvc", "push"], repo, check=False, env=env)
    assert result.returncode != 0
    assert f'Could not connect to the endpoint URL: "{s3.endpoint}/{BUCKET}/dvc/' in result.stderr
    check = run(["python", "tools/check_remote.py"], repo, check=False, env=env)
    assert check.returncode == 1 and f"remote 's3' (s3://{BUCKET}/dvc at {s3.endpoint}) cannot be used" in check.stderr
    cache_is_intact(repo)
    assert "up to date" in dvc(repo, "status", env=env).stdout
    s3.start()
    env = s3.env(git_env())
    assert "pushed" in dvc(repo, "push", env=env).stdout
    assert "in sync" in dvc(repo, "status", "--cloud", env=env).stdout


def test_corrupted_object_on_the_remote_is_not_checked_out(repo, s3):
    env = s3.env(git_env())
    use_s3(repo, s3, env)
    dvc(repo, "push", env=env)
    lock = (repo / "dvc.lock").read_text()
    docs_md5 = lock.split("path: data/clean/docs.parquet")[1].split("md5: ")[1].split()[0]
    key = f"dvc/files/md5/{docs_md5[:2]}/{docs_md5[2:]}"
    assert key in s3.keys()
    s3.s3().put_object(Bucket=BUCKET, Key=key, Body=b"not a parquet file")
    other = clone(publish(repo, env), repo.parent / "other", env)
    result = run(["dvc", "pull"], other, check=False, env=env)
    assert result.returncode != 0
    assert not (other / "data/clean/docs.parquet").exists()
    assert (other / "models/model/model.safetensors").exists()  # the intact outputs still arrive
