"""What a translated model is: named columns computed stage by stage, the outputs, and the rows the model would
raise on; and the few expression helpers every translator shares (float32 features, missing values, sums in
the library's order, sigmoid, softmax, argmax)."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from udfs.compiled import native

PREFIX = "__m"  # the program's own columns: dropped once the outputs are taken


class Unsupported(Exception):
    """No exact translation: the message names the model's class (or flavor) and the first part not supported."""


@dataclass(frozen=True)
class Feature:
    """One model input as the pyfunc model receives it: `column` is typed as the signature says (null where
    pandas would hold NaN or None)."""

    name: str
    column: Column
    spark_type: T.DataType
    source: str | None = None  # the input column `column` reads (cast where its type differs), if one


@dataclass(frozen=True)
class NativeTrees:
    """A program column that the JVM tree evaluator appends (udfs.compiled.native): the packed ensemble and
    its feature columns (doubles, named in earlier stages or the input)."""

    packed: bytes
    features: tuple[str, ...]


@dataclass
class Program:
    """A model as successive projections. Each stage is a list of (name, expression) over the input columns
    and earlier stages' names; separate stages keep Spark from recomputing a shared value (a float32 feature
    read by a hundred trees) per use: Catalyst does not collapse a projection whose non-trivial results are
    read more than once; an entry may instead be the JVM tree evaluator (NativeTrees), which appends its column
    after the stage's projection (`with_stages` runs them). `outputs` are expressions over the last stage, one
    per output field, in order.
    `error` is the model's exception for rows the model would raise on (NaN where it takes none, an unknown
    category), as `Type: first line`, else null; it is never raised inside a stage, so rows the job skips never fail."""

    stages: list[list[tuple[str, Column | NativeTrees]]] = field(default_factory=lambda: [[]])
    outputs: list[Column] = field(default_factory=list)
    size: int = 0  # tree nodes translated: what decides whether Spark compiles the program well (engine.py)
    max_size: int | None = None  # more tree nodes than this: Unsupported, raised before their expressions are built
    # the caller rejects rows whose inputs are null, NaN or infinite before they reach the model, so checks of
    # the raw inputs can be left out (every check is code in the row's generated method)
    inputs_finite: bool = False
    # trees run in the JVM tree evaluator (udfs.compiled.native, loaded into the session by the caller) rather
    # than as SQL expressions: never for a view, whose query is stored as SQL text
    native: bool = False
    native_trees: int = 0  # trees the JVM evaluator runs
    native_nodes: int = 0  # their nodes
    # where the library's own predictor walks trees faster than the evaluator (XGBoost's), it says so here: an
    # ensemble over the engine's node budget then scores faster as a UDF (spark_jobs.model.engine)
    faster_in_library: str | None = None

    @property
    def described(self) -> str:
        """How the program runs, for the run's log and summary."""
        if self.native_trees:
            return f"translated, {self.native_trees:,} trees in the JVM tree evaluator"
        return f"translated, {self.size:,} tree nodes as SQL expressions" if self.size else "translated"
    _count: int = 0
    _errors: list[tuple[Column, Column]] = field(default_factory=list)
    # per program column that the tree evaluator may read from an input column instead: that column's name.
    # It holds the same double where the input column is a double, NaN or null where missing (the evaluator
    # takes both as missing); with_stages checks the input's type.
    sources: dict[str, str] = field(default_factory=dict)
    _named: dict[int, tuple[Column, str]] = field(default_factory=dict)  # id of a column `let` returned: its name

    def let(self, expr: Column, source: str | None = None) -> Column:
        """Compute `expr` in the current stage; returns a reference to it for later stages. `source`: an input
        column the tree evaluator may read in its place (see `sources`)."""
        name = f"{PREFIX}{self._count}"
        self._count += 1
        self.stages[-1].append((name, expr))
        column = F.col(name)
        self._named[id(column)] = (column, name)  # the column kept, so that its id stays its own
        if source is not None:
            self.sources[name] = source
        return column

    def source_of(self, value: Column) -> str | None:
        """The input column the evaluator may read for `value`, where `let` was told one."""
        found = self._named.get(id(value))
        return self.sources.get(found[1]) if found is not None and found[0] is value else None

    def let_native(self, trees: NativeTrees) -> Column:
        """The tree evaluator's sums, appended after the current stage's projection; later stages read them."""
        name = f"{PREFIX}{self._count}"
        self._count += 1
        self.stages[-1].append((name, trees))
        return F.col(name)

    def next_stage(self) -> None:
        if self.stages[-1]:
            self.stages.append([])

    def fail_when(self, condition: Column, message: str | Column, error: str = "ValueError") -> None:
        """Rows where `condition` holds are rows the model raises on, with the exception `error` and `message`
        (a Column where the message names the row's value); the first condition that holds wins. Stored as
        the UDF reports a model's exception: `ValueError: <first line>`."""
        text = F.concat(F.lit(f"{error}: "), message if isinstance(message, Column) else F.lit(message))
        self._errors.append((condition, text))

    @property
    def error(self) -> Column | None:
        """One flat CASE WHEN over every check, first first. (Nesting a coalesce per check makes Spark's
        subexpression elimination walk the conditionals exponentially: a dozen checks took minutes to plan.)"""
        if not self._errors:
            return None
        (condition, text), *rest = self._errors
        reason = F.when(condition, text)
        for condition, text in rest:
            reason = reason.when(condition, text)
        return reason

    @property
    def columns(self) -> list[str]:
        return [name for stage in self.stages for name, _ in stage]


def with_stages(df: DataFrame, programs: Sequence[Program]) -> DataFrame:
    """`df` with every program's columns, stage by stage (the programs' k-th stages in one projection, then
    the k-th stages' tree evaluators); the programs' names must differ (Program._count apart), and their
    outputs must be set (what they read is kept). Before an
    evaluator, the program columns nothing after it reads are dropped, and it reads an input column where a
    program column only repeats it (`Program.sources`): the evaluator ends the query Spark optimizes, so
    every column of its input is computed and copied for every row, used or not (2 of 6 s in a warm run of
    4M rows with a 100-tree model, benchmarks/RESULTS.md)."""
    doubles = {f.name for f in df.schema.fields if isinstance(f.dataType, T.DoubleType)}
    for k in range(max((len(p.stages) for p in programs), default=0)):
        stage = [entry for p in programs if k < len(p.stages) for entry in p.stages[k]]
        df = df.withColumns({name: e for name, e in stage if isinstance(e, Column)})
        natives = [(name, e, [_read(p, f, doubles) for f in e.features])
                   for p in programs if k < len(p.stages) for name, e in p.stages[k] if isinstance(e, NativeTrees)]
        if natives:
            df = _live(df, programs, k, [f for _, _, features in natives for f in features])
        for name, e, features in natives:
            df = native.append(df, name, e.packed, features)
    return df


def _read(program: Program, name: str, doubles: set[str]) -> str:
    """The column the evaluator reads for the program column `name`: the input column it repeats, where that
    is a double, else itself."""
    source = program.sources.get(name)
    return source if source is not None and source in doubles else name


_NAME = re.compile(re.escape(PREFIX) + r"[0-9]+")


def _live(df: DataFrame, programs: Sequence[Program], k: int, read: list[str]) -> DataFrame:
    """`df` without the program columns that neither `read` nor anything after stage k reads (found in the
    expressions' text; where Spark shortens that text, nothing is dropped)."""
    later = [e for p in programs for stage in p.stages[k + 1:] for _, e in stage if isinstance(e, Column)]
    later += [e for p in programs for e in [*p.outputs, p.error] if e is not None]
    texts = [str(e) for e in later]
    if any("more fields" in t for t in texts):  # Spark 3.5 abbreviates long argument lists
        return df
    needed = set(read) | {name for t in texts for name in _NAME.findall(t)}
    needed |= {f for p in programs for stage in p.stages[k + 1:] for _, e in stage if isinstance(e, NativeTrees)
               for f in e.features}
    own = {name for p in programs for name in p.columns}
    dead = [c for c in df.columns if c in own and c not in needed]
    return df.drop(*dead) if dead else df


def missing(value: Column) -> Column:
    """NaN or null: both reach a scikit-learn model as NaN. Spark's NaN compares greater than every number
    and equal to itself, so a comparison must never see one."""
    return value.isNull() | F.isnan(value)


def as_double(value: Column) -> Column:
    return value.cast(T.DoubleType())


def f32(value: Column) -> Column:
    """The value as a float32 column (XGBoost's arithmetic is float32 throughout)."""
    return value.cast(T.FloatType())


def as_float32(value: Column) -> Column:
    """The value rounded to float32 and widened back, as numpy's astype(float32) then a float64 comparison
    (Java's double-to-float cast rounds to nearest even, like numpy)."""
    return value.cast(T.FloatType()).cast(T.DoubleType())


def chain_sum(terms: Sequence[Column]) -> Column:
    """((t0 + t1) + t2) + ...: the order a loop that accumulates into one array adds in."""
    return functools.reduce(lambda a, b: a + b, terms)


SUM_CHUNK = 64  # terms per stage of a running sum


def running_sum(program: Program, terms: Sequence[Column]) -> Column:
    """chain_sum of any number of terms, in the same order and with the same roundings, as partial sums of
    SUM_CHUNK terms in successive stages: one expression of hundreds of nested additions (a 300-tree
    ensemble) overflows the stack of Spark's analysis. Adds stages when the terms are many."""
    if len(terms) <= SUM_CHUNK:
        return chain_sum(terms)
    total = program.let(chain_sum(terms[:SUM_CHUNK]))
    program.next_stage()
    for start in range(SUM_CHUNK, len(terms), SUM_CHUNK):
        total = program.let(chain_sum([total, *terms[start : start + SUM_CHUNK]]))
        program.next_stage()
    return total


def sigmoid(x: Column) -> Column:
    """scipy.special.expit: 1 / (1 + exp(-x))."""
    return F.lit(1.0) / (F.lit(1.0) + F.exp(-x))


def softmax(program: Program, scores: Sequence[Column]) -> list[Column]:
    """sklearn.utils.extmath.softmax: exp(x - max) / sum(exp(x - max)), summed left to right; adds stages."""
    top = program.let(F.greatest(*scores)) if len(scores) > 1 else scores[0]
    program.next_stage()
    exps = [program.let(F.exp(s - top)) for s in scores]
    program.next_stage()
    total = program.let(chain_sum(exps))
    program.next_stage()
    return [e / total for e in exps]


def argmax_label(values: Sequence[Column], labels: Sequence[object]) -> Column:
    """labels[argmax(values)] with numpy's tie rule: the first of equal maxima wins (a NaN counts as the max,
    as Spark's greatest and numpy's argmax both take it)."""
    best = F.greatest(*values) if len(values) > 1 else values[0]
    expr = F.when(values[0] == best, F.lit(labels[0]))
    for value, label in zip(values[1:], labels[1:], strict=True):
        expr = expr.when(value == best, F.lit(label))
    return expr
