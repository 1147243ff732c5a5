"""`distill push` / `distill pull`: DVC's push and pull with the run cache and the teacher cache, and
remote errors told in one line that names the remote and the fix.

    distill push [--remote NAME]   record a grown teacher cache (when .cache/teacher.dvc is tracked),
                                   then `dvc push --run-cache`
    distill pull [--remote NAME]   `dvc pull --run-cache`

DVC itself does the transfer (content-addressed, so a push killed half-way leaves only whole objects on
the remote and a rerun sends what is missing); this module only adds the run cache (so a clone can
restore any run it has not checked out, e.g. after `git checkout` of an older commit or an experiment,
instead of recomputing it) and translates the errors of the storage client (S3, GCS, Azure, SSH, a
folder) into what to do. It never touches the workspace: a failed push or pull leaves it as it was.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TEACHER_CACHE = Path(".cache/teacher")

# (pattern in DVC's error output, what went wrong, the fix, exit code); first match wins.
_KNOWN: list[tuple[str, str, str, int]] = [
    (
        r"Unable to locate credentials|NoCredentialsError|DefaultCredentialsError|"
        r"credentials were not found|No credentials",
        "no credentials",
        "export the storage's credentials in this shell (S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        "or AWS_PROFILE; GCS: GOOGLE_APPLICATION_CREDENTIALS; Azure: AZURE_STORAGE_CONNECTION_STRING), or "
        "store them outside git with `dvc remote modify --local {name} <option> <value>`",
        2,
    ),
    (
        r"InvalidAccessKeyId|SignatureDoesNotMatch|InvalidClientTokenId|AccessDenied|Forbidden|\(403\)|"
        r"\(401\)|AuthenticationFailed|ClientAuthenticationError|Permission denied \(publickey",
        "credentials refused",
        "check the key and secret in the environment (or `dvc remote modify --local {name} ...`) and that "
        "they may read and write {url}",
        2,
    ),
    (
        r"NoSuchBucket|bucket does not exist|ContainerNotFound|container does not exist|"
        r"The specified container does not exist|404 .*[Bb]ucket",
        "the bucket does not exist",
        "create it, or fix the remote's url: `dvc remote modify {name} url <scheme>://<bucket>/<path>`",
        2,
    ),
    (
        r"Could not connect to the endpoint URL|EndpointConnectionError|Connection refused|"
        r"Name or service not known|nodename nor servname|Temporary failure in name resolution|"
        r"timed out|Max retries exceeded|Cannot connect to host",
        "the endpoint is unreachable",
        "check the network and the remote's endpoint (`dvc remote modify {name} endpointurl <url>` for "
        "S3-compatible storage), then rerun: what was transferred is kept",
        4,
    ),
]


class RemoteError(RuntimeError):
    """A push or pull failed; `code` is the exit status `distill` ends with."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass
class Remote:
    """A DVC remote: its name and url (from the repo's, the user's and the local config)."""

    name: str
    url: str


def _dvc_cmd() -> str:
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_dvc_cmd(), *args], cwd=root, env=_env(), capture_output=True, text=True)


def resolve_remote(root: Path, name: str | None = None) -> Remote:
    """The remote `name` (default: the repo's default remote) with its url; a clear error when there is
    none."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            config = repo.config
            remotes = {k: str(v.get("url", "")) for k, v in config["remote"].items()}
            default = config["core"].get("remote")
    except DvcException as exc:
        raise RemoteError(f"cannot read the DVC config in {root}: {exc}", 2) from None
    if name is None:
        name = default
        if not name:
            raise RemoteError(
                "no default DVC remote: add one with `dvc remote add -d <name> <url>` (see README, "
                "'Share it'), or pass --remote NAME",
                2,
            )
    if name not in remotes:
        raise RemoteError(
            f"no DVC remote named {name!r} (remotes: {sorted(remotes) or 'none'}): add it with "
            f"`dvc remote add {name} <url>`",
            2,
        )
    return Remote(name, remotes[name])


def _last_error(proc: subprocess.CompletedProcess) -> str:
    """DVC's `ERROR: ...` line (or the last line of its output)."""
    text = (proc.stderr or "") + "\n" + (proc.stdout or "")
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR")]
    if errors:
        return errors[0].removeprefix("ERROR:").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def explain(action: str, remote: Remote, output: str, returncode: int) -> RemoteError:
    """One line for a failed `dvc push`/`dvc pull`: what went wrong with which remote, and the fix."""
    direction = "to" if action == "push" else "from"
    where = f"{action} {direction} remote {remote.name!r} ({remote.url}) failed"
    for pattern, what, fix, code in _KNOWN:
        if re.search(pattern, output):
            return RemoteError(f"{where}: {what}. Fix: {fix.format(name=remote.name, url=remote.url)}.", code)
    proc = subprocess.CompletedProcess([], returncode, stdout="", stderr=output)
    return RemoteError(
        f"{where}: {_last_error(proc)}. "
        f"Rerun `distill {action}` (what was transferred is kept); `dvc {action} -v` shows details.",
        1,
    )


def record_teacher_cache(root: Path) -> bool:
    """`dvc add .cache/teacher` when the teacher cache is tracked (`.cache/teacher.dvc` exists) and has
    grown since; True when `.cache/teacher.dvc` changed (then commit it with git)."""
    dvc_file = root / f"{TEACHER_CACHE}.dvc"
    if not dvc_file.exists() or not (root / TEACHER_CACHE).is_dir():
        return False
    before = dvc_file.read_text()
    proc = _run(root, "add", str(TEACHER_CACHE))
    if proc.returncode != 0:
        raise RemoteError(f"cannot record the teacher cache ({TEACHER_CACHE}): {_last_error(proc)}", 1)
    return dvc_file.read_text() != before


def push(root: Path, remote: str | None = None, run_cache: bool = True) -> str:
    """Record a grown teacher cache, then `dvc push` (with the run cache) to `remote`; DVC's summary."""
    target = resolve_remote(root, remote)
    changed = record_teacher_cache(root)
    args = ["push", "-r", target.name, *(["--run-cache"] if run_cache else [])]
    proc = _run(root, *args)
    if proc.returncode != 0:
        raise explain("push", target, proc.stderr + proc.stdout, proc.returncode)
    summary = proc.stdout.strip().splitlines()[-1:] or ["done"]
    note = f"; {TEACHER_CACHE}.dvc changed: commit it with git" if changed else ""
    return f"pushed to {target.name} ({target.url}): {summary[0]}{note}"


def pull(root: Path, remote: str | None = None, run_cache: bool = True) -> str:
    """`dvc pull` (with the run cache) from `remote`; DVC's summary."""
    target = resolve_remote(root, remote)
    args = ["pull", "-r", target.name, *(["--run-cache"] if run_cache else [])]
    proc = _run(root, *args)
    if proc.returncode != 0:
        raise explain("pull", target, proc.stderr + proc.stdout, proc.returncode)
    summary = proc.stdout.strip().splitlines()[-1:] or ["done"]
    return f"pulled from {target.name} ({target.url}): {summary[0]}"
