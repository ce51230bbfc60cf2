"""Small file-system operations through Hadoop's FileSystem (local, HDFS, object stores alike), plus an
exclusive create that is atomic where the file system allows it. Listings, Parquet footers and small reads on a
local disk (the embedded default) go to the operating system and pyarrow instead, and elsewhere the listings and
footers go into the JVM in one call each: asked from Python file by file, every file costs a few py4j round
trips into a JVM whose Hadoop and Parquet classes are still interpreted."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import pyarrow.parquet as pq
from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.sql import SparkSession

from spark_jobs.background import each

log = logging.getLogger("score_table.fs")


def _fs(spark: SparkSession, path: str, uri: bool = False) -> tuple[Any, Any]:
    """Hadoop's file system and path for `path`: a plain path (as Hadoop prints one), or with `uri`, a URI
    string as `DataFrame.inputFiles()` and the catalog give them (percent-encoded, so not a path as is)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(path) if uri else path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath


def exists(spark: SparkSession, path: str) -> bool:
    local = local_path(path)
    if local is not None:
        return os.path.exists(local)
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
    """A small file's bytes (a run-history row, a profile, a report): from a local disk directly (through
    Hadoop's classes, 0.1-0.2 s a file in a fresh JVM), else through Hadoop's file system."""
    local = local_path(path)
    if local is not None:
        with open(local, "rb") as f:
            return f.read()
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
    files = data_files(spark, root)
    read = _Footers(spark).read_all(files)
    return [(f.path, int(rows or 0)) for f, (rows, _) in zip(files, read, strict=True)]


@dataclass(frozen=True)
class DataFile:
    """A file as a listing gives it."""

    path: str  # as Hadoop prints it
    size: int  # bytes
    modified: float  # seconds
    status: Any = field(default=None, compare=False, repr=False)  # Hadoop's, where it was asked for file by file

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def data_files(spark: SparkSession, root: str) -> list[DataFile]:
    """The files under `root` (a path as Hadoop prints it, as the catalog's locations are), recursively, in one
    listing, less what Spark's file readers skip: entries whose name starts with `_` (unless it holds `=`, a
    partition folder) or `.`, and files being copied in (`._COPYING_`). A folder that does not exist holds
    none."""
    return data_files_in(spark, [root])[0]


def data_files_in(spark: SparkSession, roots: Sequence[str]) -> list[list[DataFile]]:
    """`data_files` of each root: from the operating system on a local disk, else in one call into the JVM
    where this project's classes load (`_Helper`), else a listing of each root on a few threads."""
    if not roots:
        return []
    local = [local_path(r) for r in roots]
    if all(p is not None for p in local):
        return [_listed_locally(p) for p in local if p is not None]
    helper = _Helper.of(spark)
    if helper is not None:
        with contextlib.suppress(Py4JError, ValueError):
            return [[DataFile(str(p), int(n), float(m) / 1000.0) for p, n, m in files]
                    for files in helper.call("list", roots)]
    return each(lambda root: _listed(spark, root), list(roots), threads=4)


def local_path(path: str) -> str | None:
    """The local path of a `file:` path as Hadoop prints it (`file:/a/b`, its characters literal, not
    percent-encoded); None on any other file system (a path without a scheme is on the default one)."""
    if not path.startswith("file:"):
        return None
    rest = path[len("file:"):]
    if rest.startswith("//"):
        host, _, rest = rest[2:].partition("/")
        if host not in ("", "localhost"):
            return None
        rest = "/" + rest
    return rest if rest.startswith("/") else None


def _listed_locally(root: str) -> list[DataFile]:
    """`data_files` on a local disk, from the operating system: a fresh JVM lists and reads footers through
    Hadoop's and Parquet's classes still interpreted, 0.3 s for a listing and 0.4 s for 32 footers in a run's
    planning, against milliseconds here. Paths as Hadoop prints them, in the order of their names."""
    if os.path.isfile(root):
        found = [root]
    else:
        found = []
        for folder, folders, names in os.walk(root, followlinks=True):
            folders[:] = [d for d in folders if not d.startswith(("_", ".")) or "=" in d]
            found += [os.path.join(folder, n) for n in names
                      if not n.startswith(("_", ".")) and not n.endswith("._COPYING_")]
    files = []
    for path in sorted(found):
        with contextlib.suppress(FileNotFoundError):  # gone since the listing: not there
            st = os.stat(path)
            files.append(DataFile(f"file:{path}", st.st_size, st.st_mtime_ns // 1_000_000 / 1000.0))
    return files


def _listed(spark: SparkSession, root: str) -> list[DataFile]:
    fs, p = _fs(spark, root)
    base = str(fs.makeQualified(p).toString()).rstrip("/")
    try:
        files = fs.listFiles(p, True)
    except Py4JJavaError as e:
        if "FileNotFoundException" in e.java_exception.getClass().getName():
            return []
        raise
    found = []
    while files.hasNext():
        status = files.next()
        path = str(status.getPath().toString())
        relative = path[len(base):].strip("/").split("/")
        if not any(part.startswith(("_", ".")) and "=" not in part for part in relative) \
                and not relative[-1].endswith("._COPYING_"):
            found.append(DataFile(path, int(status.getLen()), float(status.getModificationTime()) / 1000.0,
                                  status))
    return found


@dataclass(frozen=True)
class FileFacts:
    size: int  # bytes
    modified: float  # seconds
    rows: int | None  # from the footer; None where not read or not readable
    plain: frozenset[str] | None = None  # top-level columns of its first row group stored without a dictionary


def parquet_facts(spark: SparkSession, files: Sequence[DataFile], footers: int = 0,
                  plain_of: Collection[int] = (0,)) -> list[FileFacts]:
    """Size, modification time and rows of files as a listing gives them (`data_files`); rows from the Parquet
    footers of the first `footers` files (None for the others, and for a footer that cannot be read), no row
    read; and from the footers of the files at `plain_of`, which columns their writer stored without a
    dictionary (`publishing.encoding`)."""
    read = _Footers(spark).read_all(files[:footers], strict=False, plain_of=plain_of)
    return [FileFacts(f.size, f.modified, *(read[i] if i < len(read) else (None, None)))
            for i, f in enumerate(files)]


def parquet_files(spark: SparkSession, uris: Sequence[str], footers: int = 0) -> list[FileFacts]:
    """`parquet_facts` of files given as URIs (as `DataFrame.inputFiles()` gives them)."""
    reader = _Footers(spark)

    def listed(uri: str) -> DataFile:
        status = reader.status(uri)
        return DataFile(str(status.getPath().toString()), int(status.getLen()),
                        float(status.getModificationTime()) / 1000.0, status)

    return parquet_facts(spark, each(listed, list(uris)), footers)


def parquet_rows(spark: SparkSession, uri: str) -> int:
    """Rows in one Parquet file (a URI as `DataFrame.inputFiles()` gives it), from its footer alone."""
    reader = _Footers(spark)
    return reader.rows(reader.status(uri))


class _Helper:
    """This project's `scoretable.DataFiles` (udfs/jvm): a listing of many folders, or many footers, in one
    call into the JVM, where asking from Python costs a few round trips a file (a status, its path, its size,
    its footer's row groups), more than the work itself: 1.4 s for a run's 60 staged files in a fresh JVM.
    Requests and answers are JSON, so no path or column name needs escaping."""

    _loaded: dict[int, _Helper | None] = {}  # per JVM gateway

    def __init__(self, spark: SparkSession, methods: dict[str, Any]) -> None:
        gateway = spark.sparkContext._gateway
        assert gateway is not None
        self.gateway, self.methods = gateway, methods
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()

    @classmethod
    def of(cls, spark: SparkSession) -> _Helper | None:
        """The helper in `spark`'s JVM; None where the project's classes do not load there."""
        gateway = getattr(spark.sparkContext, "_gateway", None)
        if gateway is None:
            return None
        if id(gateway) not in cls._loaded:
            from udfs import jvm_jar

            found = None
            try:
                loaded = jvm_jar.load_class(spark, "scoretable.DataFiles")
                if loaded is not None:
                    found = cls(spark, {str(m.getName()): m for m in loaded.getMethods()})
            except Py4JError as e:  # an old or foreign jar
                log.debug("listings and footers come file by file: %s", e)
            cls._loaded[id(gateway)] = found
        return cls._loaded[id(gateway)]

    def call(self, method: str, request: Any) -> Any:
        args = self.gateway.new_array(self.gateway.jvm.java.lang.Object, 2)
        args[0] = self.conf
        args[1] = json.dumps(request)
        return json.loads(str(self.methods[method].invoke(None, args)))


class _Footers:
    """Hadoop's and Parquet's classes looked up once for many files: every `jvm.a.b.C` is a few round trips
    to the JVM, which cost more than a footer's read when paid for each file."""

    def __init__(self, spark: SparkSession) -> None:
        jvm = spark.sparkContext._jvm
        assert jvm is not None
        self.spark, self.jvm = spark, jvm
        self.conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.path, self.uri = jvm.org.apache.hadoop.fs.Path, jvm.java.net.URI
        self.reader = jvm.org.apache.parquet.hadoop.ParquetFileReader
        self.input = jvm.org.apache.parquet.hadoop.util.HadoopInputFile

    def status(self, uri: str) -> Any:
        p = self.path(self.uri(uri))
        return p.getFileSystem(self.conf).getFileStatus(p)

    def status_of(self, path: str) -> Any:
        """Hadoop's status of a file given by its path as Hadoop prints it."""
        p = self.path(path)
        return p.getFileSystem(self.conf).getFileStatus(p)

    def rows(self, status: Any) -> int:
        return self.read(status)[0]

    def read(self, status: Any, columns: bool = False) -> tuple[int, frozenset[str] | None]:
        """The file's rows and, with `columns`, the top-level columns that its first row group stores without
        a dictionary page (None where the footer does not say)."""
        reader = self.reader.open(self.input.fromStatus(status, self.conf))
        try:
            rows = int(reader.getRecordCount())
            return rows, (_plain_columns(reader.getFooter()) if columns else None)
        finally:
            reader.close()

    def read_all(self, files: Sequence[DataFile], strict: bool = True, plain_of: Collection[int] = (0,)
                 ) -> list[tuple[int | None, frozenset[str] | None]]:
        """`read` of many files (with the columns of those at `plain_of`): by pyarrow on a local disk, else in one
        call into the JVM (`_Helper`), else by Parquet's own pool in one call: per file, the calls from Python
        are four round trips each, which the run's other threads slow down (measured: 21 footers 0.30-0.36 s
        against 0.18 s, 0.88 s against 0.28-0.62 s in a fresh JVM). Where that call fails (a footer that cannot
        be read), file by file: with `strict` the error is raised, else that file's rows are None."""
        if not files:
            return []
        local = [local_path(f.path) for f in files]
        if all(p is not None for p in local):
            try:
                return [_footer_here(p, i in plain_of, strict) for i, p in enumerate(local) if p is not None]
            except (OSError, ValueError):  # a footer that cannot be read, where that is an error: Hadoop's
                log.debug("a footer does not read here; read through the JVM", exc_info=True)
        helper = _Helper.of(self.spark)
        if helper is not None:
            with contextlib.suppress(Py4JError, ValueError):
                read = helper.call("footers", {"paths": [f.path for f in files], "plain": sorted(plain_of),
                                               "strict": strict})
                return [(None if rows is None else int(rows), None if plain is None else frozenset(plain))
                        for rows, plain in read]
        statuses = [f.status if f.status is not None else self.status_of(f.path) for f in files]
        try:
            listing = self.jvm.java.util.ArrayList()
            for s in statuses:
                listing.add(s)
            footers = self.reader.readAllFootersInParallel(self.conf, listing, False)
            found = {}
            for i in range(footers.size()):
                footer = footers.get(i)
                found[str(footer.getFile().toString())] = footer.getParquetMetadata()
            metadata = [found[str(s.getPath().toString())] for s in statuses]
        except (Py4JError, KeyError):
            log.debug("reading %d footers one by one", len(statuses), exc_info=True)
            return each(lambda i: self._read_one(statuses[i], i in plain_of, strict), list(range(len(statuses))))
        return [(_rows(m), _plain_columns(m) if i in plain_of else None) for i, m in enumerate(metadata)]

    def _read_one(self, status: Any, columns: bool, strict: bool) -> tuple[int | None, frozenset[str] | None]:
        if strict:
            return self.read(status, columns)
        with contextlib.suppress(Py4JJavaError):
            return self.read(status, columns)
        return None, None


def _footer_here(path: str, columns: bool, strict: bool) -> tuple[int | None, frozenset[str] | None]:
    """`_Footers.read` of a file on a local disk, by pyarrow; a footer that cannot be read raises where
    `strict`, else it is unknown."""
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError):
        if strict:
            raise
        return None, None
    if not columns or metadata.num_row_groups == 0:
        return metadata.num_rows, None
    first, schema = metadata.row_group(0), metadata.schema
    return metadata.num_rows, frozenset(
        schema.column(i).name for i in range(first.num_columns)
        if schema.column(i).path == schema.column(i).name and not first.column(i).has_dictionary_page)


def _rows(metadata: Any) -> int:
    blocks = metadata.getBlocks()
    return sum(int(blocks.get(i).getRowCount()) for i in range(blocks.size()))


def _plain_columns(metadata: Any) -> frozenset[str] | None:
    try:
        blocks = metadata.getBlocks()
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
