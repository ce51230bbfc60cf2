"""Tree ensembles scored by a class of this package's own inside the JVM (udfs/jvm, built by `make` into
udfs/jvm/score-table.jar): it walks every tree over flat node arrays and appends the sums of their leaves,
per output, in the library's order and precision, to each row of a DataFrame. The same `Tree`s the SQL
translation writes as nested conditionals go in, so the arithmetic is the same; what changes is the cost:
Spark's conditionals cost about 200 ns per tree and row and stop whole-stage code generation, the array walk
a few ns per node. It scores blocks of rows one tree at a time (a column expression sees one row), so it is a
step between two projections of a program (Program.let_native), not an expression.

The jar is optional (udfs.jvm_jar). Where it is missing, or the session has no JVM of its own (Spark Connect),
or the class cannot be loaded, `load` says so once in the log and translations write the trees as SQL expressions.
Whether a translation may use it is the caller's to say (Program.native), having loaded it into its session."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from udfs import jvm_jar

if TYPE_CHECKING:
    from udfs.compiled.trees import Tree

log = logging.getLogger("score_table")
CLASS = "scoretable.TreeEnsemble"
MAGIC = 0x53545245
LESS_THAN, FLOAT32, HAS_INIT = 1, 2, 4
MAX_FEATURES = 0xFFFF  # a node holds its feature's index in 16 bits

_factory: dict[int, Any] = {}  # per JVM gateway: the static TreeEnsemble.append method, or None


def pack(trees: Sequence[Tree], features: int, operator: str, threshold: Callable[[float], float], outputs: int,
         first_output: Sequence[int], init: Sequence[float] | None, float32: bool) -> bytes:
    """The ensemble in the layout TreeEnsemble reads (little-endian): trees' nodes concatenated with their
    children renumbered, thresholds as the library compares them (`threshold` maps a stored one)."""
    flags = (LESS_THAN if operator == "<" else 0) | (FLOAT32 if float32 else 0) | (HAS_INIT if init is not None else 0)
    offsets = np.cumsum([0, *[len(t.feature) for t in trees]])
    widths = [int(t.value.shape[1]) for t in trees]
    value_at: list[np.ndarray] = []
    values: list[np.ndarray] = []
    next_value = 0
    for t, w in zip(trees, widths, strict=True):
        leaf = t.left < 0
        where = np.full(len(t.feature), -1, np.int64)
        where[leaf] = next_value + w * np.arange(int(leaf.sum()))
        value_at.append(where)
        values.append(np.asarray(t.value, np.float64)[leaf].ravel())
        next_value += w * int(leaf.sum())
    feature = np.concatenate([np.where(t.left >= 0, t.feature, 0) for t in trees]).astype("<i4")
    thresholds = np.array([threshold(float(v)) for t in trees for v in t.threshold], "<f8")
    left = np.concatenate([np.where(t.left >= 0, t.left + o, -1) for t, o in zip(trees, offsets, strict=False)])
    right = np.concatenate([np.where(t.left >= 0, t.right + o, -1) for t, o in zip(trees, offsets, strict=False)])
    categorical = [(int(o) + i, cats) for t, o in zip(trees, offsets, strict=False) if t.categories is not None
                   for i, cats in enumerate(t.categories) if cats is not None and t.left[i] >= 0]
    parts = [struct.pack("<7i", MAGIC, flags, outputs, features, len(trees), int(offsets[-1]), next_value)]
    if init is not None:
        parts.append(np.asarray(init, "<f8").tobytes())
    parts += [np.asarray(offsets[:-1], "<i4").tobytes(), np.asarray(first_output, "<i4").tobytes(),
              np.asarray(widths, "<i4").tobytes(), feature.tobytes(), thresholds.tobytes(),
              left.astype("<i4").tobytes(), right.astype("<i4").tobytes(),
              np.concatenate([np.asarray(t.missing_left, bool) for t in trees]).astype(np.uint8).tobytes(),
              np.concatenate(value_at).astype("<i4").tobytes(),
              np.concatenate(values).astype("<f8").tobytes() if values else b"",
              struct.pack("<i", len(categorical))]
    for node, cats in categorical:
        parts += [struct.pack("<2i", node, len(cats)), np.asarray(cats, "<i4").tobytes()]
    return b"".join(parts)


def load(spark: SparkSession) -> bool:
    """Whether `spark` can run TreeEnsemble: the jar added to the session (driver and executors) once per JVM,
    the class loaded from it. False for a session without a JVM of its own (Spark Connect)."""
    gateway = getattr(spark.sparkContext, "_gateway", None) if hasattr(spark, "_jsparkSession") else None
    if gateway is None:
        return False
    if id(gateway) not in _factory:
        _factory[id(gateway)] = _load(spark)
    return _factory[id(gateway)] is not None


def _load(spark: SparkSession) -> Any:
    if not jvm_jar.JAR.exists():
        log.info("the JVM tree evaluator is not built (%s missing): trees run as SQL expressions", jvm_jar.JAR.name)
        return None
    try:
        loaded = jvm_jar.load_class(spark, CLASS)
        if loaded is None:
            log.warning("the JVM tree evaluator could not be added to this session: trees run as SQL expressions")
            return None
        session = spark._jsparkSession  # type: ignore[attr-defined]
        methods = {m.getName(): m for m in loaded.getMethods()}
        gateway = spark.sparkContext._gateway
        assert gateway is not None
        args = gateway.new_array(gateway.jvm.java.lang.Object, 1)
        args[0] = session.emptyDataFrame()
        if not methods["supported"].invoke(None, args):  # a Spark without the internal API it reaches
            log.warning("the JVM tree evaluator does not run on this Spark: trees run as SQL expressions")
            return None
        return methods["append"]
    except Exception as e:  # an old or foreign jar, a locked-down cluster: the SQL expressions still work
        log.warning("the JVM tree evaluator could not be loaded (%s): trees run as SQL expressions",
                    str(e).splitlines()[0] if str(e) else type(e).__name__)
        return None


def append(df: DataFrame, name: str, packed: bytes, features: Sequence[str]) -> DataFrame:
    """`df` with the column `name`: the ensemble's sums over the named feature columns (doubles, null where
    missing), in the session `load` loaded the evaluator into."""
    gateway = df.sparkSession.sparkContext._gateway
    method = _factory.get(id(gateway))
    assert gateway is not None and method is not None, "native.load(spark) first"
    names = gateway.new_array(gateway.jvm.java.lang.String, len(features))
    for i, feature in enumerate(features):
        names[i] = feature
    args = gateway.new_array(gateway.jvm.java.lang.Object, 4)
    args[0] = df._jdf
    args[1] = bytearray(packed)
    args[2] = names
    args[3] = name
    return DataFrame(method.invoke(None, args), df.sparkSession)
