"""A real ``tether serve`` on a small disk of its own, which a test can fill and free.

The server runs in a private mount namespace (``unshare -Urm``) in which a
tmpfs of a few MiB is mounted over its data dir: a real file system that
really runs out of space, for that process only. The test reaches the same
files through ``/proc/PID/root`` (the server's view of the file system), so
it can take the last free byte with a filler file of its own and give the
space back while the server runs.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from helpers.server import TetherServer

#: How the server's data dir gets its own file system: ``$0`` is the mount
#: point, the rest of the arguments the command that then runs there.
_MOUNT_THEN_EXEC = 'mount -t tmpfs -o size="$SMALL_DISK_SIZE" tmpfs "$0" && exec "$@"'


def require_small_disks() -> None:
    """Skip unless this machine lets us mount a private tmpfs (in CI: fail instead)."""
    reason = ""
    if shutil.which("unshare") is None:
        reason = "unshare (util-linux) is not installed"
    else:
        with tempfile.TemporaryDirectory() as mount:
            probe = subprocess.run(
                ["unshare", "-Urm", "sh", "-c", _MOUNT_THEN_EXEC, mount, "true"],
                env={**os.environ, "SMALL_DISK_SIZE": "1m"},
                capture_output=True,
                text=True,
            )
            if probe.returncode != 0:
                reason = f"cannot mount a private tmpfs: {probe.stderr.strip()}"
    if not reason:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so this is a failure, not a skip")
    pytest.skip(reason)


class SmallDiskServer(TetherServer):
    """``tether serve --data-dir MOUNT/data`` with MOUNT a tmpfs of ``size`` (``4m``...)."""

    def __init__(self, mount: Path, size: str, **kwargs: Any) -> None:
        super().__init__(mount / "data", **kwargs)
        self.mount = mount
        self.size = size
        self.env = {**(self.env or os.environ), "SMALL_DISK_SIZE": size}

    def command(self) -> list[str]:
        mount = ["unshare", "-Urm", "sh", "-c", _MOUNT_THEN_EXEC, str(self.mount)]
        return [*mount, *super().command()]

    def path(self, name: str) -> Path:
        """A file on the small disk, as the server sees it."""
        return Path(f"/proc/{self.pid}/root{self.mount}") / name

    def fill(self) -> None:
        """Take every free byte of the disk with a filler file."""
        fd = os.open(self.path("filler"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for block in (1 << 16, 1 << 12):
                while True:
                    try:
                        os.write(fd, b"\0" * block)
                    except OSError as err:
                        if err.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def free(self) -> None:
        """Give the filler's space back."""
        self.path("filler").unlink()
