"""Models as Spark column expressions: scored inside the JVM under whole-stage code generation, no Python
worker, no Arrow crossing. Only models whose library arithmetic can be reproduced exactly translate; anything
else raises `Unsupported` naming the model's class and the first part that has no translation, and the job
scores with the Arrow UDF instead. Whether a translation is right is proven on every run (spark_jobs.model.engine)
by comparing it with the model's own pyfunc predictions, never assumed."""

from __future__ import annotations

from udfs.compiled.program import Feature, Program, Unsupported
from udfs.compiled.translate import translate

__all__ = ["Feature", "Program", "Unsupported", "translate"]
