"""Size-rotated log files, gzip-compressed in the background, with count and age retention.

Rotation renames the full file to a unique, time-stamped name while the handler lock is held
(a rename: no line is lost or written twice, whatever the number of logging threads); a single
background thread then compresses it to ``.gz`` and prunes old files. The logging thread never
waits for compression. Files left uncompressed by a crash are compressed at the next start.

One process writes one file: several processes rotating the same file is not supported.

A file that cannot be written (a full disk, a read-only remount, a lost mount) suspends the
handler instead of printing a traceback per record: one ERROR record names the file and the errno,
records are then counted as lost (``qm_otel.telemetry.dropped``, ``signal="log_file"``) and not
written, and the file is tried again after 1 s, 2 s, 4 s … up to a minute; when a write succeeds
again one INFO record says how many were lost. Other handlers (stdout, OTLP) are not affected. A
file deleted or moved by another program (logrotate without ``copytruncate``) is noticed within a
second and opened afresh, as the stdlib's ``WatchedFileHandler`` does.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging.handlers
import os
import queue
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qm_otel.core import instruments

__all__ = ["RotatingGzipFileHandler"]

_DAY_S = 86_400.0
_WATCH_S = 1.0  # how often the file's identity is checked (a stat), at most
_RETRY_FIRST_S, _RETRY_MAX_S = 1.0, 60.0
_logger = logging.getLogger("qm_otel.files")


class RotatingGzipFileHandler(logging.handlers.RotatingFileHandler):
    """``RotatingFileHandler`` whose rotated files are ``<name>.<UTC stamp>.gz``.

    Args:
        filename: the active log file.
        max_bytes: rotate when the next record would make the file larger (default 100 MB).
        backups: rotated files kept, newest first (default 7).
        max_age_days: rotated files older than this are removed (default 7).
        compress: how a rotated file is compressed (tests replace it); runs on the background thread.

    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 7,
        max_age_days: float = 7.0,
        compress: Callable[[Path], Path] | None = None,
    ) -> None:
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self.max_age_s = max_age_days * _DAY_S
        self._compress = compress or _gzip
        self._jobs: queue.Queue[Path | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="qm-otel-log-compress", daemon=True)
        self._worker.start()
        for partial in self.base.parent.glob(self.base.name + ".*.gz.partial"):
            partial.unlink(missing_ok=True)  # a compression cut short; its source is still there
        for leftover in sorted(self._rotated(suffix="")):
            self._jobs.put(leftover)
        self._jobs.put(Path())  # prune once at start
        self._identity = self._stream_identity()
        self._watched_at = time.monotonic()
        self._clock = time.monotonic
        self._suspended_until: float | None = None
        self._retry_s = _RETRY_FIRST_S
        self._lost = 0
        self._reporting = False

    # --- writing, with a file that can disappear or fill up --------------------------------------

    def _stream_identity(self) -> tuple[int, int] | None:
        if self.stream is None:
            return None
        try:
            status = os.fstat(self.stream.fileno())
        except (OSError, ValueError):
            return None
        return status.st_dev, status.st_ino

    def _reopen_if_moved(self) -> None:
        """Open the path afresh when another program deleted or moved the file (at most once a second)."""
        now = self._clock()
        if now - self._watched_at < _WATCH_S:
            return
        self._watched_at = now
        try:
            status = os.stat(self.baseFilename)
            current: tuple[int, int] | None = (status.st_dev, status.st_ino)
        except FileNotFoundError:
            current = None
        if self.stream is not None and current == self._identity:
            return
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        self.stream = self._open()
        self._identity = self._stream_identity()

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; while the file is suspended, count it as lost instead."""
        if self._reporting:  # our own error/recovery record: it is about this file, not for it
            return
        if self._suspended_until is not None:
            if self._clock() < self._suspended_until:
                self._count_lost("suspended")
                return
            self._resume()
        try:
            self._reopen_if_moved()
            if self.shouldRollover(record):
                self.doRollover()
            logging.FileHandler.emit(self, record)
        except OSError as exc:
            self._suspend(exc)
        except Exception:  # a record that cannot be formatted: the stdlib's report
            self.handleError(record)
            return
        else:  # (a failed flush inside the stdlib's emit went to handleError, which suspended)
            if self._lost and self._suspended_until is None:
                lost, self._lost = self._lost, 0
                self._announce(logging.INFO, "log file %s is writable again; %d record(s) were not written to it",
                               self.baseFilename, lost)

    def handleError(self, record: logging.LogRecord) -> None:
        """A write that failed with ``OSError`` suspends the file; anything else is the stdlib's report."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            self._suspend(exc)
        else:
            super().handleError(record)

    def _suspend(self, exc: OSError) -> None:
        first = self._suspended_until is None and not self._lost
        self._suspended_until = self._clock() + self._retry_s
        retry_s, self._retry_s = self._retry_s, min(self._retry_s * 2, _RETRY_MAX_S)
        self._count_lost("write_failed")
        if self.stream is not None:
            with contextlib.suppress(OSError):  # the buffered bytes cannot be written either: lost too
                self.stream.close()
            self.stream = None
        if first:
            self._announce(logging.ERROR, "log file %s cannot be written (%s, errno %s: %s); "
                           "file logging suspended, retrying with backoff (first in %.0f s)",
                           self.baseFilename, _errno_name(exc), exc.errno, exc.strerror, retry_s)

    def _resume(self) -> None:
        """The suspension is over: the next write tries the file again (it reopens)."""
        self._suspended_until = None
        self._watched_at = -_WATCH_S  # check the path now

    def _count_lost(self, reason: str) -> None:
        self._lost += 1
        instruments.current().telemetry_dropped.add(1, {"signal": "log_file", "reason": reason})

    def _announce(self, level: int, message: str, *args: object) -> None:
        """Log about this file through every other handler (this one skips it)."""
        self._reporting = True
        try:
            _logger.log(level, message, *args)
        finally:
            self._reporting = False

    @property
    def base(self) -> Path:
        """The active file."""
        return Path(self.baseFilename)

    def _rotated(self, suffix: str) -> list[Path]:
        """Rotated files: uncompressed (``suffix=""``) or compressed (``".gz"``)."""
        pattern = re.compile(re.escape(self.base.name) + r"\.\d{8}T\d{15}" + re.escape(suffix) + "$")
        return [path for path in self.base.parent.iterdir() if pattern.match(path.name)]

    def doRollover(self) -> None:
        """Rename the active file aside (fast, under the handler lock) and queue its compression."""
        if self.stream:
            self.stream.close()
            self.stream = None
        if self.base.exists() and self.base.stat().st_size > 0:
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{time.time_ns() % 1_000_000_000:09d}"
            target = self.base.with_name(f"{self.base.name}.{stamp}")
            self.rotate(str(self.base), str(target))
            self._jobs.put(target)
        if not self.delay:
            self.stream = self._open()
            self._identity = self._stream_identity()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if job != Path() and job.exists():
                    self._compress(job)
                self._prune()
            except OSError:
                logging.getLogger("qm_otel.files").exception("compressing or pruning rotated logs failed")
            finally:
                self._jobs.task_done()

    def _prune(self) -> None:
        done = sorted(self._rotated(suffix=".gz"), key=lambda p: p.name, reverse=True)
        now = time.time()
        for index, path in enumerate(done):
            if index >= self.backupCount or now - path.stat().st_mtime > self.max_age_s:
                path.unlink(missing_ok=True)

    def wait_for_compression(self, timeout_s: float | None = None) -> bool:
        """Block until every queued rotation is compressed and pruned (tests, shutdown)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._jobs.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Close the file; compression already queued finishes (bounded) before the worker stops."""
        super().close()
        self.wait_for_compression(timeout_s=30)
        self._jobs.put(None)


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, "OSError")


def _gzip(path: Path) -> Path:
    """Compress ``path`` to ``path.gz`` (written aside, then renamed) and remove it."""
    target = path.with_name(path.name + ".gz")
    partial = path.with_name(path.name + ".gz.partial")
    with path.open("rb") as source, gzip.open(partial, "wb") as sink:
        shutil.copyfileobj(source, sink, length=1024 * 1024)
    os.replace(partial, target)
    os.utime(target, (path.stat().st_atime, path.stat().st_mtime))
    path.unlink()
    return target
