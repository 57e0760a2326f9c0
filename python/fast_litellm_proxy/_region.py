"""The region a proxy's processes share when FAST_LITELLM_SHM is unset.

Servers that spawn fresh interpreters (uvicorn's `--num_workers`, granian) give each worker
nothing inherited, so an anonymous region would be each worker's own and every limit would
count per worker. The launcher and the config-line activation therefore pick a file that
every process of one proxy attaches to:

    /dev/shm/fast_litellm-proxy.<pid of the proxy's master>

The master removes it when it exits (an `atexit` handler registered in the master only). A
master killed without running it (SIGKILL, OOM) leaves the file; every later start of a proxy
through fast_litellm_proxy removes such files of this user whose master is gone.
"""

from __future__ import annotations

import atexit
import os
from typing import List, Optional

DIRECTORY = "/dev/shm"
PREFIX = "fast_litellm-proxy."
#: Set in the master's environment to the master's pid: the process that removes the region.
OWNER_VARIABLE = "FAST_LITELLM_PROXY_REGION_OWNER"


#: Servers whose workers a fast_litellm process can be (the first words of the parent's command).
SERVERS = ("litellm", "litellm-proxy", "gunicorn", "uvicorn", "granian", "hypercorn")


def server_parent_command() -> Optional[str]:
    """The parent's command line when this process is a worker of a server (gunicorn, uvicorn,
    granian, hypercorn, litellm --num_workers), else None."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    # "gunicorn ...", "python .../gunicorn ...", "python -m uvicorn ...", or gunicorn's own
    # process title "gunicorn: master [app:app]".
    if any(os.path.basename(arg).split(":")[0] in SERVERS for arg in argv[:3]):
        return " ".join(argv).strip()
    return None


def path_for(master_pid: int) -> str:
    return os.path.join(DIRECTORY, f"{PREFIX}{master_pid}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(new_master: int = 0) -> List[str]:
    """Removes this user's region files whose master is no longer running, and the one named
    after `new_master`, a master that is only starting (its pid's file is a dead process's).
    Returns what it removed."""
    removed: List[str] = []
    try:
        names = os.listdir(DIRECTORY)
    except OSError:
        return removed
    uid = os.geteuid()
    for name in names:
        if not name.startswith(PREFIX) or not name[len(PREFIX):].isdigit():
            continue
        pid = int(name[len(PREFIX):])
        path = os.path.join(DIRECTORY, name)
        try:
            if os.lstat(path).st_uid != uid or (pid != new_master and _alive(pid)):
                continue
            os.unlink(path)
            removed.append(path)
        except OSError:
            continue
    return removed


def choose_for_master(env: "os._Environ[str]", master_pid: int, starting: bool) -> str:
    """Sets FAST_LITELLM_SHM in `env` for a proxy whose master is `master_pid` (when unset),
    and marks that master as the one that removes it. `starting`: the master is starting now
    (the launcher), so a file named after it is stale; a worker joins a master's running
    region. Returns the region path ('' when the user set FAST_LITELLM_SHM, whose file is
    theirs to keep)."""
    if env.get("FAST_LITELLM_SHM", "").strip():
        return ""
    if not os.path.isdir(DIRECTORY):
        raise SystemExit(f"fast-litellm: {DIRECTORY} is missing; set FAST_LITELLM_SHM to a file on a tmpfs")
    remove_stale(new_master=master_pid if starting else 0)
    path = path_for(master_pid)
    env["FAST_LITELLM_SHM"] = path
    env[OWNER_VARIABLE] = str(master_pid)
    return path


def remove_at_exit_if_owner() -> None:
    """In the master that chose the region: removes it when the process exits. Forked workers
    inherit the handler, so it checks the pid when it runs."""
    owner = os.environ.get(OWNER_VARIABLE, "")
    path = os.environ.get("FAST_LITELLM_SHM", "")
    if not owner.isdigit() or int(owner) != os.getpid() or not path.startswith(os.path.join(DIRECTORY, PREFIX)):
        return

    def remove() -> None:
        if os.getpid() != int(owner):
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    atexit.register(remove)
