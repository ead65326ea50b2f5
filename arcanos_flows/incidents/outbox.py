"""The incident spool: a write-ahead outbox on disk, safe under kill -9 and concurrent flushers.

Each incident is one file ``<incident_id>.json``, written to a temporary name, fsynced and renamed,
so a reader sees either nothing or the whole incident. A deliverer holds an exclusive ``flock`` on
the file while it delivers and unlinks it only after a 2xx, still holding the lock; a second
deliverer (thread or process) that opened the same file sees it unlinked once it gets the lock and
skips it. The kernel drops the lock when a process dies, so a killed deliverer never strands a file.
POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from arcanos_flows.incidents.model import Incident

__all__ = ["Outbox"]

logger = logging.getLogger("arcanos_flows.outbox")

_SUFFIX = ".json"
_STALE_TEMP_SECONDS = 3600


class Outbox:
    """A folder of incidents waiting for delivery.

    Args:
        directory: The spool folder; created (mode 0700) on first write.

    Examples:
        >>> import tempfile
        >>> from arcanos_flows.incidents.model import Incident
        >>> outbox = Outbox(Path(tempfile.mkdtemp()))
        >>> path = outbox.put(Incident(incident_class="timeout", reason="slow", error_type="x.Y"))
        >>> [incident.reason for incident in outbox.pending()]
        ['slow']
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser()

    def path_for(self, incident_id: uuid.UUID) -> Path:
        """Where the incident with this id waits."""
        return self.directory / f"{incident_id}{_SUFFIX}"

    def put(self, incident: Incident) -> Path:
        """Write the incident durably (temp file, fsync, rename, fsync folder) and return its path.

        Writing the same ``incident_id`` twice keeps one file: duplicates are dropped at the source.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = self.path_for(incident.incident_id)
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{incident.incident_id}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(incident.to_json().encode("utf-8"))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        self._sync_directory()
        return target

    def paths(self) -> list[Path]:
        """Spooled incident files, oldest first."""
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return []  # nothing was ever spooled there (a misconfigured spool is reported by put)
        found: list[tuple[float, str]] = []
        for entry in entries:
            if entry.name.endswith(_SUFFIX) and not entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    found.append((entry.stat().st_mtime, entry.name))
        return [self.directory / name for _, name in sorted(found)]

    def pending(self) -> list[Incident]:
        """The incidents waiting, oldest first (unreadable files are skipped and logged)."""
        incidents = []
        for path in self.paths():
            try:
                incident = self._read(path)
            except FileNotFoundError:
                continue  # delivered meanwhile
            except OSError as exc:
                logger.error("Cannot read spooled incident %s: %s", path, exc)
                continue
            if incident is not None:
                incidents.append(incident)
        return incidents

    @contextlib.contextmanager
    def claim(self, path: Path) -> Iterator[Incident | None]:
        """Lock one spooled incident for delivery.

        Yields:
            The incident, or ``None`` when another deliverer holds it or already delivered it.
            Call :meth:`done` inside the block once it is delivered.
        """
        try:
            handle = open(path, "rb")  # noqa: SIM115 - the lock must outlive this statement
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            # One unreadable entry (a folder, a file of another user) must not block the whole queue.
            logger.error("Cannot open spooled incident %s: %s; skipping it", path, exc)
            yield None
            return
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            except OSError as exc:
                logger.error("Cannot lock spooled incident %s: %s; skipping it", path, exc)
                yield None
                return
            if os.fstat(handle.fileno()).st_nlink == 0:
                # Delivered (or replaced by a rewrite of the same id) between our open and our lock.
                yield None
                return
            yield self._parse(path, handle.read())

    def done(self, incident: Incident) -> None:
        """Remove a delivered incident; call it while holding its :meth:`claim`."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_for(incident.incident_id))
        self._sync_directory()

    def remove_stale_temporaries(self) -> None:
        """Clean up temp files left by a process killed in :meth:`put`; fresh ones are left alone.

        A temp file older than an hour belongs to a dead writer (a live one renames it within
        milliseconds). If it holds a complete incident (killed between fsync and rename) the
        incident is recovered into the spool; otherwise the partial file is deleted.
        """
        cutoff = time.time() - _STALE_TEMP_SECONDS
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return
        for entry in entries:
            if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                continue
            with contextlib.suppress(OSError):
                if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    self._recover_or_delete(Path(entry.path))

    def _recover_or_delete(self, temp: Path) -> None:
        with open(temp, "rb") as handle:
            # Locked like a claim: the recovered file is a hard link to this same inode, so no
            # deliverer can take it before the temp name is gone, and a second cleaner that opened
            # the temp meanwhile finds it unlinked (or its name gone) and does nothing.
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            if os.fstat(handle.fileno()).st_nlink == 0:
                return
            try:
                incident: Incident | None = Incident.model_validate_json(handle.read())
            except ValidationError:
                incident = None
            if incident is not None:
                # link() never replaces: an incident already spooled under this id keeps its file.
                with contextlib.suppress(FileExistsError):
                    os.link(temp, self.path_for(incident.incident_id))
                    logger.warning(
                        "Recovered incident %s from an interrupted write (%s)", incident.incident_id, temp.name
                    )
            os.unlink(temp)
        self._sync_directory()

    def _read(self, path: Path) -> Incident | None:
        return self._parse(path, path.read_bytes())

    def _parse(self, path: Path, raw: bytes) -> Incident | None:
        try:
            return Incident.model_validate_json(raw)
        except ValidationError:
            # Never deleted: a human may still recover it; renaming stops it blocking the queue.
            quarantined = path.with_suffix(".unreadable")
            with contextlib.suppress(OSError):
                os.replace(path, quarantined)
            logger.error("Spooled incident %s is unreadable; moved it to %s", path.name, quarantined)
            return None

    def _sync_directory(self) -> None:
        with contextlib.suppress(OSError):
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
