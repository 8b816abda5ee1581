"""Rotating gzip files: no line lost or doubled under concurrent writers, compression off the logging thread."""

from __future__ import annotations

import gzip
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from qm_otel.logs.files import RotatingGzipFileHandler

WRITERS = 8
LINES = 2_000


def read_all_lines(directory: Path, name: str) -> list[str]:
    lines: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".gz"):
            lines += gzip.decompress(path.read_bytes()).decode().splitlines()
        elif path.name.startswith(name):
            lines += path.read_text().splitlines()
    return lines


def make_logger(handler: logging.Handler, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return logger


def test_concurrent_writers_lose_and_duplicate_nothing_across_rotations(tmp_path: Path) -> None:
    handler = RotatingGzipFileHandler(tmp_path / "app.log", max_bytes=20_000, backups=10_000, max_age_days=7)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.files.concurrent")

    def write(writer: int) -> None:
        for n in range(LINES):
            logger.info("writer=%d line=%d %s", writer, n, "x" * 40)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    handler.close()

    lines = read_all_lines(tmp_path, "app.log")
    expected = {f"writer={w} line={n} {'x' * 40}" for w in range(WRITERS) for n in range(LINES)}
    assert len(lines) == WRITERS * LINES  # nothing doubled ...
    assert set(lines) == expected  # ... and nothing lost
    rotated = [p for p in tmp_path.iterdir() if p.name.endswith(".gz")]
    assert len(rotated) > 20  # it really rotated, many times
    assert all(p.stat().st_size < 20_000 for p in rotated)  # and compressed
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_compression_never_blocks_the_logging_thread(tmp_path: Path) -> None:
    release = threading.Event()
    compressing = threading.Event()

    def slow_compress(path: Path) -> Path:
        compressing.set()
        release.wait(timeout=60)
        target = path.with_name(path.name + ".gz")
        target.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        return target

    handler = RotatingGzipFileHandler(tmp_path / "app.log", max_bytes=1_000, backups=100, compress=slow_compress)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.files.blocking")
    for n in range(200):  # ~20 rotations while the compressor is stuck on the first one
        logger.info("line %d %s", n, "y" * 80)
    assert compressing.wait(timeout=60)
    assert not release.is_set()  # all 200 records were written while compression was blocked
    release.set()
    handler.close()
    lines = read_all_lines(tmp_path, "app.log")
    assert sorted(lines) == sorted(f"line {n} {'y' * 80}" for n in range(200))


def test_retention_keeps_the_newest_backups_and_drops_old_files(tmp_path: Path) -> None:
    handler = RotatingGzipFileHandler(tmp_path / "app.log", max_bytes=500, backups=3, max_age_days=7)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, "test.files.retention")
    for n in range(100):
        logger.info("line %03d %s", n, "z" * 60)
    handler.wait_for_compression(timeout_s=60)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".gz"))
    assert len(kept) == 3
    newest = read_all_lines(tmp_path, "app.log")
    assert "line 099 " + "z" * 60 in newest  # the newest lines survive, the oldest went with old files
    assert "line 000 " + "z" * 60 not in newest
    # a rotated file older than max_age_days is removed even while under the count
    old = tmp_path / kept[0]
    eight_days = time.time() - 8 * 86_400
    os.utime(old, (eight_days, eight_days))
    logger.info("one more %s", "z" * 600)  # forces a rotation, which prunes
    handler.close()
    assert not old.exists()


def test_a_rotation_left_uncompressed_by_a_crash_is_compressed_at_start(tmp_path: Path) -> None:
    leftover = tmp_path / "app.log.20251123T101010000000001"
    leftover.write_text("from before the crash\n")
    (tmp_path / "app.log.20251123T101010000000001.gz.partial").write_bytes(b"half")
    handler = RotatingGzipFileHandler(tmp_path / "app.log")
    handler.wait_for_compression(timeout_s=60)
    handler.close()
    assert not leftover.exists()
    assert gzip.decompress((tmp_path / (leftover.name + ".gz")).read_bytes()) == b"from before the crash\n"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("max_bytes", [1, 64])
def test_tiny_limits_still_write_every_record_once(tmp_path: Path, max_bytes: int) -> None:
    handler = RotatingGzipFileHandler(tmp_path / "app.log", max_bytes=max_bytes, backups=1_000)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler, f"test.files.tiny{max_bytes}")
    for n in range(50):
        logger.info("record %d", n)
    handler.close()
    assert sorted(read_all_lines(tmp_path, "app.log")) == sorted(f"record {n}" for n in range(50))
