"""Small file-system operations through Hadoop's FileSystem (local, HDFS, object stores alike), plus an
exclusive create that is atomic where the file system allows it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.sql import SparkSession

from spark_jobs.background import each


def _fs(spark: SparkSession, path: str, uri: bool = False) -> tuple[Any, Any]:
    """Hadoop's file system and path for `path`: a plain path (as Hadoop prints one), or with `uri`, a URI
    string as `DataFrame.inputFiles()` and the catalog give them (percent-encoded, so not a path as is)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(path) if uri else path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def exists(spark: SparkSession, path: str) -> bool:
    fs, p = _fs(spark, path)
    return bool(fs.exists(p))


def delete(spark: SparkSession, path: str) -> None:
    fs, p = _fs(spark, path)
    fs.delete(p, True)


def rename(spark: SparkSession, source: str, target: str) -> None:
    fs, p = _fs(spark, source)
    if not fs.rename(p, _fs(spark, target)[1]):
        raise OSError(f"could not rename {source} to {target}")


def glob(spark: SparkSession, pattern: str) -> list[str]:
    fs, p = _fs(spark, pattern)
    found = fs.globStatus(p)
    return [str(s.getPath().toString()) for s in (found or [])]


def mtime(spark: SparkSession, path: str) -> float:
    fs, p = _fs(spark, path)
    return float(fs.getFileStatus(p).getModificationTime()) / 1000.0


def touch(spark: SparkSession, path: str, when: float) -> None:
    fs, p = _fs(spark, path)
    fs.setTimes(p, int(when * 1000), -1)


def read_text(spark: SparkSession, path: str) -> str:
    return read_bytes(spark, path).decode("utf-8")


def read_bytes(spark: SparkSession, path: str) -> bytes:
    fs, p = _fs(spark, path)
    stream = fs.open(p)
    try:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def create_exclusive(spark: SparkSession, path: str, text: str) -> bool:
    """Create `path` with `text` unless it exists; False when it does. Atomic on local disks (O_EXCL) and
    HDFS; on object stores two writers can both succeed (see the README)."""
    parsed = urlparse(path)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme else path
        os.makedirs(os.path.dirname(local), exist_ok=True)
        try:
            fd = os.open(local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    fs, p = _fs(spark, path)
    try:
        stream = fs.create(p, False)
    except Py4JJavaError as e:  # only "it exists" means locked; a permission or network error is an error
        if "FileAlreadyExistsException" in e.java_exception.getClass().getName():
            return False
        raise
    try:
        stream.write(bytearray(text.encode()))
    finally:
        stream.close()
    return True


def path_of(spark: SparkSession, uri: str) -> str:
    """A URI string (percent-encoded, as the catalog describes a location) as the path Hadoop prints."""
    return str(_fs(spark, uri, uri=True)[1].toString())


def replace_text(spark: SparkSession, path: str, text: str) -> None:
    """`replace_bytes` of the text's UTF-8 bytes."""
    replace_bytes(spark, path, text.encode())


def replace_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    """Write `data` to `path` so readers see the old or the new content, never a partial one. Local disks:
    an atomic rename over the old file. HDFS and object stores have no rename-over: the old file is deleted
    and the new one renamed in, so a reader in that moment finds no file (and should retry); S3-like stores
    copy on rename, so a reader may also see the new file appear some milliseconds late. The file being
    written is named with a leading `_`, which Spark's readers skip."""
    parsed = urlparse(path)
    folder, name = path.rsplit("/", 1)
    if parsed.scheme in ("", "file"):
        local = parsed.path if parsed.scheme else path
        os.makedirs(os.path.dirname(local), exist_ok=True)
        tmp = os.path.join(os.path.dirname(local), f"_{name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, local)
        return
    fs, p = _fs(spark, path)
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    tmp = jvm.org.apache.hadoop.fs.Path(f"{folder}/_{name}.tmp")
    stream = fs.create(tmp, True)
    try:
        stream.write(bytearray(data))
    finally:
        stream.close()
    fs.delete(p, False)
    if not fs.rename(tmp, p):
        raise OSError(f"could not rename {tmp} to {path}")


def parquet_row_counts(spark: SparkSession, root: str) -> list[tuple[str, int]]:
    """(path, rows) of every Parquet file under `root`, from the footers alone: no row is read. Hidden and
    underscore entries (`_SUCCESS`, `_temporary`) are skipped, as Spark's readers skip them."""
    fs, p = _fs(spark, root)
    base = str(fs.makeQualified(p).toString()).rstrip("/")
    statuses = []
    files = fs.listFiles(p, True)
    while files.hasNext():
        status = files.next()
        path = str(status.getPath().toString())
        relative = path[len(base):].strip("/").split("/")
        if not any(part.startswith(("_", ".")) and "=" not in part for part in relative):
            statuses.append((path, status))
    footers = _Footers(spark)
    return list(zip([path for path, _ in statuses], each(footers.rows, [s for _, s in statuses]), strict=True))


@dataclass(frozen=True)
class FileFacts:
    size: int  # bytes
    modified: float  # seconds
    rows: int | None  # from the footer; None where not read or not readable
    plain: frozenset[str] | None = None  # top-level columns of its first row group stored without a dictionary


def parquet_files(spark: SparkSession, uris: Sequence[str], footers: int = 0) -> list[FileFacts]:
    """Size, modification time and rows of files given as URIs (as `DataFrame.inputFiles()` gives them);
    rows from the Parquet footers of the first `footers` files (None for the others, and for a footer that
    cannot be read), no row read; and from the first footer, which columns its writer stored without a
    dictionary (`publishing.encoding`)."""
    reader = _Footers(spark)

    def facts(i: int) -> FileFacts:
        status = reader.status(uris[i])
        rows, plain = None, None
        if i < footers:
            with contextlib.suppress(Py4JJavaError):
                rows, plain = reader.read(status, columns=i == 0)
        return FileFacts(int(status.getLen()), float(status.getModificationTime()) / 1000.0, rows, plain)

    return each(facts, list(range(len(uris))))


def parquet_rows(spark: SparkSession, uri: str) -> int:
    """Rows in one Parquet file (a URI as `DataFrame.inputFiles()` gives it), from its footer alone."""
    reader = _Footers(spark)
    return reader.rows(reader.status(uri))


class _Footers:
    """Hadoop's and Parquet's classes looked up once for many files: every `jvm.a.b.C` is a few round trips
    to the JVM, which cost more than a footer's read when paid for each file."""

    def __init__(self, spark: SparkSession) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.path, self.uri = jvm.org.apache.hadoop.fs.Path, jvm.java.net.URI
        self.reader = jvm.org.apache.parquet.hadoop.ParquetFileReader
        self.input = jvm.org.apache.parquet.hadoop.util.HadoopInputFile

    def status(self, uri: str) -> Any:
        p = self.path(self.uri(uri))
        return p.getFileSystem(self.conf).getFileStatus(p)

    def rows(self, status: Any) -> int:
        return self.read(status)[0]

    def read(self, status: Any, columns: bool = False) -> tuple[int, frozenset[str] | None]:
        """The file's rows and, with `columns`, the top-level columns that its first row group stores without
        a dictionary page (None where the footer does not say)."""
        reader = self.reader.open(self.input.fromStatus(status, self.conf))
        try:
            rows = int(reader.getRecordCount())
            return rows, (_plain_columns(reader) if columns else None)
        finally:
            reader.close()


def _plain_columns(reader: Any) -> frozenset[str] | None:
    try:
        blocks = reader.getFooter().getBlocks()
        if blocks.isEmpty():
            return None
        chunks = blocks.get(0).getColumns()
        found = []
        for i in range(chunks.size()):
            chunk = chunks.get(i)
            path = chunk.getPath()
            if path.size() == 1 and not chunk.hasDictionaryPage():
                found.append(str(path.toDotString()))
        return frozenset(found)
    except Py4JError:  # a Parquet library without these calls: nothing is known
        return None
