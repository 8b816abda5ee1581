"""Size-rotated log files, gzip-compressed in the background, with count and age retention.

Rotation renames the full file to a unique, time-stamped name while the handler lock is held
(a rename: no line is lost or written twice, whatever the number of logging threads); a single
background thread then compresses it to ``.gz`` and prunes old files. The logging thread never
waits for compression. Files left uncompressed by a crash are compressed at the next start.

One process writes one file: several processes rotating the same file is not supported.
"""

from __future__ import annotations

import gzip
import logging.handlers
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["RotatingGzipFileHandler"]

_DAY_S = 86_400.0


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
