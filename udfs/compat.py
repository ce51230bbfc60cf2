"""Spark 3.5 and 4.x from one code base. Each capability that differs between the two lines is detected here,
once, at import; the rest of the package asks this module and never tests versions itself. Where Spark 4 has
the better API it is used when present, and the Spark 3.5 equivalent otherwise, with the same results."""

from __future__ import annotations

import re

import pyspark
from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

SPARK_VERSION: tuple[int, ...] = tuple(int(p) for p in re.findall(r"\d+", pyspark.__version__)[:2])  # (3, 5), (4, 3)
ARROW_UDF = hasattr(F, "arrow_udf")  # Spark 4.1+: a UDF over Arrow arrays, no pandas conversion by pyspark
COLUMN_TRY_CAST = hasattr(Column, "try_cast")  # Spark 4.0+; Spark 3.5 has TRY_CAST only as SQL syntax
DDL_PARSER = hasattr(T.DataType, "fromDDL")  # Spark 4.0+; on 3.5 the private parser needs a SparkContext


def quote(name: str) -> str:
    """A column name as a quoted SQL identifier: whatever it holds, it stays one name."""
    return "`" + name.replace("`", "``") + "`"


def col(name: str) -> Column:
    """The column of that exact name (dots, spaces and backticks in it are part of the name)."""
    return F.col(quote(name))


def try_cast(name: str, to: T.DataType) -> Column:
    """The named column cast to `to`, null where a value does not convert (never an error, whatever
    `spark.sql.ansi.enabled` says: a plain cast fails on 4.x, where ANSI is on by default, and on 3.5 it
    turns '1.5' into the int 1). Spark 3.5: the same TRY_CAST expression, written as SQL from the quoted
    name and the type's SQL name only."""
    if COLUMN_TRY_CAST:
        return col(name).try_cast(to)
    return F.expr(f"TRY_CAST({quote(name)} AS {sql_type(to)})")


def sql_type(data_type: T.DataType) -> str:
    """A type as SQL writes it, struct field names quoted (`simpleString` leaves them bare)."""
    if isinstance(data_type, T.StructType):
        return "STRUCT<" + ", ".join(f"{quote(f.name)}: {sql_type(f.dataType)}" for f in data_type.fields) + ">"
    if isinstance(data_type, T.ArrayType):
        return f"ARRAY<{sql_type(data_type.elementType)}>"
    if isinstance(data_type, T.MapType):
        return f"MAP<{sql_type(data_type.keyType)}, {sql_type(data_type.valueType)}>"
    return data_type.simpleString()


def type_from_ddl(text: str) -> T.DataType:
    """A Spark DDL type string ('double', 'label string, score double') as a DataType. Spark 3.5 has no
    public parser; its private one asks the JVM of the active SparkContext, which a job always has here."""
    if DDL_PARSER:
        return T.DataType.fromDDL(text)  # type: ignore[attr-defined,no-any-return]
    from pyspark.sql.types import _parse_datatype_string

    return _parse_datatype_string(text)


def limitations() -> list[str]:
    """What this Spark lacks that the job would use, one line each, for the run's log."""
    notes = []
    if not ARROW_UDF:
        notes.append(f"Spark {pyspark.__version__}: features cross to the model as pandas batches "
                     "(Arrow UDFs need Spark 4.1)")
    return notes
