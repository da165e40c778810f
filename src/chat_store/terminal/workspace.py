"""The current git checkout as a session's workspace: repo (as `host/owner/name`), branch, path."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from chat_store.client.models import Workspace

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.+)$")


def repo_name(remote_url: str) -> str | None:
    """`git@github.com:acme/api.git` and `https://user:token@github.com/acme/api` both give
    `github.com/acme/api`: the form docs/api.md uses, and never the credentials a URL may carry."""
    url = remote_url.strip()
    if "://" in url:
        rest = url.split("://", 1)[1]
        host_part, _, path = rest.partition("/")
        host = host_part.rsplit("@", 1)[-1].split(":", 1)[0]
    elif match := _SCP_LIKE.match(url):
        host, path = match["host"], match["path"]
    else:
        return None
    path = path.strip("/").removesuffix(".git")
    if not host or not path:
        return None
    return f"{host}/{path}"


def _git(cwd: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
            [git, *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and out else None


def current_workspace(cwd: Path | None = None) -> Workspace | None:
    """The checkout around `cwd`, or None outside one."""
    cwd = cwd or Path.cwd()
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    branch = _git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
    remote = _git(cwd, "config", "--get", "remote.origin.url")
    return Workspace(
        repo=repo_name(remote) if remote else None,
        branch=None if branch == "HEAD" else branch,
        path=top,
    )
