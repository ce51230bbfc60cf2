"""A run's staging area: the one owner of where a run's rows wait before publishing, and of how they are laid
out there:

    <table location>/_runs/<scoring_run_id>/__outcome=scored|rejected|challenger/<partition path>/part-*.parquet

The run writes every row once, split by outcome and partition; the audit counts them from the Parquet
footers; publishing points partitions at these folders (they are the published versions afterwards), and
retention and rollback find older versions by the same layout. The same write copies a seeded sample of a
large partition's rows under `__outcome=sample_<outcome>` (the profile sample, quality.sampling): the quality
step reads those instead of every row, and deletes them before anything is published."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_jobs import fs, parquet_rows
from spark_jobs.planning.partitions import Values, from_path, matches
from spark_jobs.planning.plan import REJECT_REASON, ScoringPlan
from spark_jobs.planning.tables import ORIGINAL
from spark_jobs.publishing import constant_columns
from spark_jobs.publishing.constant_columns import ConstantColumns
from spark_jobs.scoring.bad_rows import OUTCOME
from udfs.compat import col

RUNS_DIR = "_runs"  # underscore: Spark, Hive and Parquet tools skip it when they list a table's folder
SCORED, REJECTED = "scored", "rejected"
SAMPLE = "sample_"  # outcome prefix of the rows copied for the profiles: `sample_scored` holds scored rows
_DRIVER_ROWS = 300_000  # staged rows `some_rows` reads whole (measured: 125,000 rows of 22 columns in 0.1 s)


@dataclass(frozen=True)
class StagedPartition:
    outcome: str  # scored | rejected
    values: tuple[Any, ...]  # partition values, in partition-column order
    rows: int
    location: str
    files: tuple[str, ...] = ()  # its Parquet files (paths as Hadoop prints them), as the listing found them


@dataclass(frozen=True)
class Listing:
    """What a run staged: its partitions by outcome, and the profile sample's folders (the outcome without its
    `sample_` prefix)."""

    partitions: list[StagedPartition]
    samples: list[StagedPartition]


@dataclass(frozen=True)
class StagingArea:
    table_location: str  # the output table's folder (the parent of _runs/)
    run_id: str
    schema: T.StructType  # what is staged: the output's data columns, reject_reason, the partition columns
    partition_columns: tuple[str, ...]
    stored_rejects: T.StructType | None = None  # the rejected rows' files, once rewritten with stored values

    @classmethod
    def for_run(cls, table_location: str, run_id: str, scoring: ScoringPlan,
                originals: Sequence[T.StructField] = ()) -> StagingArea:
        """`table_location` as the catalog gives it: an unpartitioned table points into `_runs/` itself.
        `originals`: the stored input columns a transform replaces (staged as `__input_<name>` beside)."""
        found = split_location(table_location)
        base = found[0] if found is not None else table_location.rstrip("/")
        return cls(base, run_id, staged_schema(scoring, originals), scoring.partition_columns)

    @property
    def root(self) -> str:
        return f"{self.table_location}/{RUNS_DIR}/{self.run_id}"

    def write(self, rows: DataFrame, constants: ConstantColumns | Callable[[DataFrame], DataFrame] | None = None,
              options: Mapping[str, str] | None = None) -> None:
        """The run's one write: every row read, split by outcome and partition. `constants` adds the columns
        that hold one value per outcome (the lineage) after the sort that a partitioned write needs, so the
        sort does not carry them (measured: 1.2 s less of a 4M-row write with five such columns); where they
        hold one value in every row, this package's JVM writer puts them in the files without the rows carrying
        them at all (publishing.constant_columns). `options`: the Parquet writer's (publishing.encoding)."""
        split = [OUTCOME, *self.partition_columns]
        jvm: dict[str, str] | None = None
        if constants is not None:  # the write finds its rows in the order it needs, and sorts no more
            rows = rows.sortWithinPartitions(*split)
            if isinstance(constants, ConstantColumns):
                jvm = constants.writer_options(rows, split)
                if jvm is None:
                    rows = rows.transform(constants.add)
            else:
                rows = rows.transform(constants)
        out = rows.write.mode("errorifexists").partitionBy(*split).options(**(options or {}))
        if jvm is not None:
            constant_columns.save(out, self.root, jvm)
        else:
            out.parquet(self.root)

    def listing(self, spark: SparkSession) -> Listing:
        """Rows and folder of every staged partition and of the profile sample's, counted from the Parquet
        footers of the files written (independent of the job that wrote them, and no row is read again), in
        one listing of the run's folder."""
        found = self._counted(spark, self.root)
        return Listing([p for p in found if not p.outcome.startswith(SAMPLE)],
                       [replace(p, outcome=p.outcome[len(SAMPLE):]) for p in found if p.outcome.startswith(SAMPLE)])

    def _counted(self, spark: SparkSession, root: str) -> list[StagedPartition]:
        fields = [next(f for f in self.schema.fields if f.name == c) for c in self.partition_columns]
        rows_in: dict[str, int] = {}
        files_in: dict[str, list[str]] = {}
        for path, rows in fs.parquet_row_counts(spark, root):
            folder = path.rsplit("/", 1)[0]
            rows_in[folder] = rows_in.get(folder, 0) + rows
            files_in.setdefault(folder, []).append(path)
        staged = []
        for folder, rows in rows_in.items():
            outcome, _, values = folder.split(f"/{OUTCOME}=", 1)[1].partition("/")
            staged.append(StagedPartition(outcome, from_path(fields, values), rows, folder, tuple(files_in[folder])))
        return sorted(staged, key=lambda p: (p.outcome, [str(v) for v in p.values]))

    def sample_rows(self, spark: SparkSession) -> DataFrame:
        """The profile sample's rows, as `every_row` gives them (the outcome that the rows copied have)."""
        picked = self.every_row(spark).where(col(OUTCOME).startswith(SAMPLE))
        return picked.withColumn(OUTCOME, F.substring(col(OUTCOME), len(SAMPLE) + 1, 1_000))

    def sample_or_rows(self, spark: SparkSession, sampled: Collection[Values]) -> DataFrame:
        """The write's sample of the partitions in `sampled`, the staged rows of the others (each read prunes
        to its partitions' folders): what the profiles and the verification of a translated model read."""
        rows = self.every_row(spark)
        if not sampled:
            return rows
        picked = self.sample_rows(spark)
        if not self.partition_columns:
            return picked
        chosen = F.lit(False)
        for v in sampled:
            chosen = chosen | matches(self.partition_columns, v)
        return picked.where(chosen).unionByName(rows.where(~chosen))

    @staticmethod
    def read_columns(spark: SparkSession, staged: Sequence[StagedPartition], columns: Sequence[str]
                     ) -> list[tuple[StagedPartition, pa.Table]]:
        """Some columns of staged partitions' files, read on the driver with no Spark job (a small quality
        step's rows: a job to read 10,000 rows back costs more than half a second)."""
        return [(p, pa.concat_tables([parquet_rows.read_columns(spark, f, columns) for f in p.files]))
                for p in staged if p.files]

    @staticmethod
    def some_rows(spark: SparkSession, listing: Listing, columns: Sequence[str], rows: int) -> pa.Table | None:
        """About `rows` of the staged scored and rejected rows (at least, where there are so many), read on the
        driver with no Spark job: from the write's sample where it drew one, else from the staged rows, each
        partition and outcome in proportion to its rows. Where there are more than `_DRIVER_ROWS` to choose
        from, each takes its share (and a half more) from its first files only."""
        sampled = {p.values for p in listing.samples}
        sources = [p for p in listing.samples if p.outcome in (SCORED, REJECTED)] + \
            [p for p in listing.partitions if p.outcome in (SCORED, REJECTED) and p.values not in sampled]
        total = sum(p.rows for p in sources)
        share = 1.0 if total <= _DRIVER_ROWS else 1.5 * rows / total  # a half more: some are rejected rows
        tables = []
        for p in sources:
            quota = math.ceil(share * p.rows)
            read = 0
            for f in p.files:
                if read >= quota:
                    break
                table = parquet_rows.read_columns(spark, f, columns)
                tables.append(table)
                read += table.num_rows
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def drop_samples(self, spark: SparkSession) -> None:
        """The sample is the quality step's alone: gone before the run's folders become published versions."""
        for folder in fs.glob(spark, f"{self.root}/{OUTCOME}={SAMPLE}*"):
            fs.delete(spark, folder)

    def rows(self, spark: SparkSession, outcome: str, columns: T.StructType | None = None) -> DataFrame:
        """The staged rows of one outcome, in the given table's columns (default: as staged)."""
        schema = self.stored_rejects if outcome == REJECTED and self.stored_rejects is not None else self.schema
        rows = (spark.read.schema(T.StructType([*schema.fields, T.StructField(OUTCOME, T.StringType())]))
                .option("basePath", self.root).parquet(self.root).where(col(OUTCOME) == outcome))
        return rows.select(*[col(f.name) for f in (columns or schema).fields])

    def every_row(self, spark: SparkSession) -> DataFrame:
        """Every staged row, of every outcome, as staged (with the outcome column)."""
        return (spark.read.schema(T.StructType([*self.schema.fields, T.StructField(OUTCOME, T.StringType())]))
                .option("basePath", self.root).parquet(self.root))

    def with_stored_rejects(self, spark: SparkSession, replaced: Sequence[str]) -> StagingArea:
        """A rejected row carries its stored input values, but the run's one write staged the transformed
        value of a replaced column (another type, maybe) under its name: rewrite the rejected rows once (a
        second write of those rows only), taking the `__input_<name>` copies, in place of their folder."""
        copies = {c: f"{ORIGINAL}{c}" for c in replaced}
        rows = self.rows(spark, REJECTED).select(*[
            col(copies[f.name]).alias(f.name) if f.name in copies else col(f.name)
            for f in self.schema.fields if not f.name.startswith(ORIGINAL)])
        folder, temporary = f"{self.root}/{OUTCOME}={REJECTED}", f"{self.root}/_rejected"
        (rows.withColumn(OUTCOME, F.lit(REJECTED)).write.mode("overwrite")
         .partitionBy(OUTCOME, *self.partition_columns).parquet(temporary))
        fs.delete(spark, folder)
        fs.rename(spark, f"{temporary}/{OUTCOME}={REJECTED}", folder)
        fs.delete(spark, temporary)
        return replace(self, stored_rejects=rows.schema)

    def example_reject(self, spark: SparkSession, keys: Sequence[str]) -> str:
        """One rejected row, by its key, for a failure message."""
        row = self.rows(spark, REJECTED).select(*[col(k) for k in keys], col(REJECT_REASON)).first()
        if row is None:
            return "-"
        return ", ".join(f"{k}={row[k]}" for k in keys) + f": {row[REJECT_REASON]}"

    def exists(self, spark: SparkSession) -> bool:
        return fs.exists(spark, self.root)

    def delete(self, spark: SparkSession) -> None:
        fs.delete(spark, self.root)


def staged_schema(scoring: ScoringPlan, originals: Sequence[T.StructField] = ()) -> T.StructType:
    """The staged files hold the scored table's columns plus reject_reason (partition columns last), and
    the stored values of replaced input columns (rejected rows only; null on scored rows)."""
    data = [f for f in scoring.output_schema.fields if f.name not in scoring.partition_columns]
    parts = [f for f in scoring.output_schema.fields if f.name in scoring.partition_columns]
    copies = [T.StructField(f"{ORIGINAL}{f.name}", f.dataType) for f in originals]
    return T.StructType([*data, T.StructField(REJECT_REASON, T.StringType()), *copies, *parts])


def split_location(location: str) -> tuple[str, str, str] | None:
    """A published folder (of the scored table or of its rejects) -> (table location, run id, partition
    path); None when not written by this job."""
    head, sep, path = location.partition(f"/{RUNS_DIR}/")
    run_id, sep2, rest = path.partition("/")
    prefix = next((p for p in (f"{OUTCOME}={SCORED}", f"{OUTCOME}={REJECTED}") if rest.startswith(p)), None)
    if not sep or not sep2 or prefix is None:
        return None
    return head, run_id, rest[len(prefix):].lstrip("/")


def table_location_of(location: str) -> str:
    """The table's own folder, from its catalog location or any folder under its `_runs/`."""
    return location.split(f"/{RUNS_DIR}/", 1)[0].rstrip("/")


def version_folders(spark: SparkSession, table_location: str, partition_path: str) -> list[tuple[str, str, str]]:
    """Every run's (run id, scored folder, rejected folder) of one partition."""
    suffix = f"/{partition_path}" if partition_path else ""
    found = []
    for folder in fs.glob(spark, f"{table_location}/{RUNS_DIR}/*/{OUTCOME}={SCORED}{suffix}"):
        run_id = folder.split(f"/{RUNS_DIR}/", 1)[1].split("/", 1)[0]
        found.append((run_id, folder, folder.replace(f"/{OUTCOME}={SCORED}", f"/{OUTCOME}={REJECTED}", 1)))
    return found


def run_folders(spark: SparkSession, table_location: str) -> list[tuple[str, str]]:
    """(run id, folder) of every run that staged rows in this table."""
    return [(folder.rstrip("/").rsplit("/", 1)[1], folder)
            for folder in fs.glob(spark, f"{table_location}/{RUNS_DIR}/*")]


def holds_versions(spark: SparkSession, run_folder: str) -> bool:
    return bool(fs.glob(spark, f"{run_folder}/{OUTCOME}=*/*"))
