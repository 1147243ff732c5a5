"""Sharing through DVC remotes: plain `dvc push`/`dvc pull` carry the teacher cache, `distill push`/`pull`
tell remote errors in one line and leave the workspace intact, a killed push completes on rerun, and
`dvc repro` after `git checkout` of an older commit restores it with zero recomputation.

The remote is a real S3 endpoint (moto's server, tests/moto_s3.py); the recipe is the cheap five-stage
fixture (tests/helpers.py), whose stages log each execution to runs.log.
"""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import REPO_ROOT, dvc, executed, free_port, run, set_param
from moto_s3 import S3Server, isolate_aws_env, s3_server  # noqa: F401

from dagster_project import cli, sharing


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every file of the workspace outside .git and .dvc (what a failed push must not touch)."""
    skip = (".git", ".dvc")
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in skip
    }


class Shared(NamedTuple):
    root: Path  # the built recipe
    prefix: str  # its remote's folder in the bucket


@pytest.fixture
def shared(fixture_repo: Path, monkeypatch, tmp_path, s3_server: S3Server) -> Shared:  # noqa: F811
    """The fixture recipe built, with this repo's .gitignore, a tracked teacher cache, an S3 default
    remote (its own prefix) and the server's credentials in the environment only."""
    isolate_aws_env(monkeypatch, tmp_path)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    root = fixture_repo
    (root / ".gitignore").write_text((REPO_ROOT / ".gitignore").read_text() + "runs.log\n")
    (root / ".cache/teacher").mkdir(parents=True)
    (root / ".cache/teacher/host-1-1.jsonl").write_text('{"key": "k1", "response": {"content": "x"}}\n')
    prefix = f"{tmp_path.name}-{time.time_ns()}"
    dvc("remote", "add", "-d", "shared", f"s3://{s3_server.bucket}/{prefix}", cwd=root)
    dvc("remote", "modify", "shared", "endpointurl", s3_server.endpoint, cwd=root)
    dvc("repro", cwd=root)
    executed(root)
    dvc("add", ".cache/teacher", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "built"], cwd=root)
    assert (
        "AWS" not in (root / ".dvc/config").read_text() and "secret" not in (root / ".dvc/config").read_text()
    )
    return Shared(root, prefix)


def test_plain_push_and_pull_carry_the_teacher_cache(shared, s3_server, tmp_path):  # noqa: F811
    shared_repo, prefix = shared
    teacher_file = shared_repo / ".cache/teacher/host-1-1.jsonl"
    digest = hashlib.md5(teacher_file.read_bytes()).hexdigest()
    out = dvc("push", cwd=shared_repo).stdout
    assert "Everything is up to date" not in out
    assert f"{prefix}/files/md5/{digest[:2]}/{digest[2:]}" in s3_server.keys(prefix)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(shared_repo), str(clone)], cwd=tmp_path)
    dvc("pull", cwd=clone)  # plain: no target
    assert (clone / ".cache/teacher/host-1-1.jsonl").read_bytes() == teacher_file.read_bytes()
    assert (clone / "assets/eval_report/metrics.json").exists()


def test_the_gitignore_hides_the_cache_contents_from_git_but_not_the_dvc_file(shared):
    shared_repo = shared.root
    status = run(["git", "status", "--porcelain", "--ignored"], cwd=shared_repo).stdout
    assert "!! .cache/teacher/" in status  # the contents are DVC's
    assert run(["git", "ls-files", ".cache"], cwd=shared_repo).stdout.split() == [".cache/teacher.dvc"]


@pytest.mark.parametrize(
    "case, expected, code",
    [
        ("missing credentials", "no credentials. Fix: export the storage's credentials", 2),
        ("wrong credentials", "credentials refused. Fix: check the key and secret", 2),
        ("no such bucket", "the bucket does not exist. Fix: create it", 2),
        ("unreachable endpoint", "the endpoint is unreachable. Fix: check the network", 4),
    ],
)
def test_remote_errors_are_one_line_naming_the_remote_and_the_fix(
    shared,
    monkeypatch,
    capsys,
    case,
    expected,
    code,
    s3_server,  # noqa: F811
):
    root = shared.root
    url = f"s3://{s3_server.bucket}/{shared.prefix}"
    if case == "missing credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    elif case == "wrong credentials":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    elif case == "no such bucket":
        url = "s3://no-such-bucket/x"
        dvc("remote", "modify", "shared", "url", url, cwd=root)
    else:
        dvc("remote", "modify", "shared", "endpointurl", f"http://127.0.0.1:{free_port()}", cwd=root)
        dvc("remote", "modify", "shared", "connect_timeout", "2", cwd=root)
    before = _tree(root)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["push", "--project", str(root)])
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line
    assert err.startswith(f"error: push to remote 'shared' ({url}) failed: {expected}"), err
    assert _tree(root) == before  # the workspace is intact


def test_a_push_killed_half_way_completes_on_rerun(shared, s3_server):  # noqa: F811
    root, prefix = shared
    (root / "data/many").mkdir()
    for i in range(300):
        (root / f"data/many/{i:03d}.bin").write_bytes(os.urandom(16_384))
    dvc("add", "data/many", cwd=root)
    before = _tree(root)
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dvc"), "push", "-j", "1"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while len(s3_server.keys(prefix)) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(s3_server.keys(prefix))
    assert 0 < partial < 300, partial  # killed half-way
    assert _tree(root) == before
    assert "pushed to shared" in sharing.push(root)
    total = set(s3_server.keys(prefix))
    assert len(total) > 300  # the 300 files, the folder listing and the recipe's outputs
    assert "in sync" in dvc("status", "--cloud", cwd=root).stdout.lower()


def test_repro_after_checking_out_an_older_commit_recomputes_nothing(fixture_repo):
    root = fixture_repo
    dvc("repro", cwd=root)
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "v1"], cwd=root)
    v1 = _tree(root / "assets")
    set_param(root, "train", "lr", 0.5)
    executed(root)
    dvc("repro", cwd=root)
    assert executed(root) == ["train", "evaluate"]
    run(["git", "add", "-A"], cwd=root)
    run(["git", "commit", "-qm", "v2"], cwd=root)
    v2 = _tree(root / "assets")
    assert v2 != v1

    run(["git", "checkout", "-q", "HEAD~1"], cwd=root)
    dvc("repro", cwd=root)
    assert executed(root) == []  # restored from the cache, nothing recomputed
    assert _tree(root / "assets") == v1
    assert "up to date" in dvc("status", cwd=root).stdout.lower()
    run(["git", "checkout", "-q", "-"], cwd=root)
    dvc("repro", cwd=root)
    assert executed(root) == [] and _tree(root / "assets") == v2
