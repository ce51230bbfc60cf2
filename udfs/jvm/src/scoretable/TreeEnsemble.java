package scoretable;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

import org.apache.spark.sql.Column;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.functions;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;

/**
 * A tree ensemble scored inside the JVM: the sums of its trees' leaf values, per output, for one row of
 * features (a struct, a null field for a missing value). Built by udfs/compiled/native.py from the same
 * generic trees the SQL translation uses, with the same arithmetic: a present value goes left where
 * {@code x < t} (or {@code x <= t}), a categorical node where the value's integer part is one of its
 * categories, a missing value by the node's flag; leaves are added tree by tree in the library's order,
 * in double or in float32, onto an initial value or from the first tree's own value.
 *
 * <p>Why it exists: Spark's nested conditional expressions cost about 200 ns per tree and row, and whole-stage
 * code generation gives up on large ensembles; a walk over flat arrays costs a few ns per node.
 */
public final class TreeEnsemble implements UDF1<Row, Object> {
  private static final long serialVersionUID = 1L;
  private static final int MAGIC = 0x53545245;  // "STRE"
  private static final int LESS_THAN = 1;
  private static final int FLOAT32 = 2;
  private static final int HAS_INIT = 4;

  private final int outputs;
  private final int features;
  private final boolean lessThan;
  private final boolean float32;
  private final double[] init;  // null: each output starts from its first tree's value
  private final int[] root;  // per tree: its root node
  private final int[] output;  // per tree: the first output its leaves add to
  private final int[] width;  // per tree: values per leaf
  private final int[] feature;  // per node
  private final double[] threshold;
  private final int[] left;  // negative at a leaf
  private final int[] right;
  private final boolean[] missingLeft;
  private final int[] value;  // per leaf node: where its values start in `values`
  private final double[] values;
  private final int[][] categories;  // per node: sorted categories that go left, or null

  public TreeEnsemble(byte[] model) {
    ByteBuffer b = ByteBuffer.wrap(model).order(ByteOrder.LITTLE_ENDIAN);
    if (b.getInt() != MAGIC) {
      throw new IllegalArgumentException("not a tree ensemble");
    }
    int flags = b.getInt();
    outputs = b.getInt();
    features = b.getInt();
    int trees = b.getInt();
    int nodes = b.getInt();
    int nValues = b.getInt();
    lessThan = (flags & LESS_THAN) != 0;
    float32 = (flags & FLOAT32) != 0;
    init = (flags & HAS_INIT) != 0 ? doubles(b, outputs) : null;
    root = ints(b, trees);
    output = ints(b, trees);
    width = ints(b, trees);
    feature = ints(b, nodes);
    threshold = doubles(b, nodes);
    left = ints(b, nodes);
    right = ints(b, nodes);
    missingLeft = new boolean[nodes];
    for (int i = 0; i < nodes; i++) {
      missingLeft[i] = b.get() != 0;
    }
    value = ints(b, nodes);
    values = doubles(b, nValues);
    int categorical = b.getInt();
    categories = categorical > 0 ? new int[nodes][] : null;
    for (int i = 0; i < categorical; i++) {
      int node = b.getInt();
      int[] set = ints(b, b.getInt());
      Arrays.sort(set);
      categories[node] = set;
    }
    if (b.hasRemaining()) {
      throw new IllegalArgumentException("trailing bytes in a tree ensemble");
    }
  }

  /**
   * The ensemble as a column over {@code features} (a struct of doubles in the order the trees number them):
   * a double for one output, an array of doubles for several. Spark and PySpark 3.5 and 4.x alike: only
   * Java-facing API is called.
   */
  public static Column column(byte[] model, Column features) {
    TreeEnsemble ensemble = new TreeEnsemble(model);
    DataType type = ensemble.outputs == 1 ? DataTypes.DoubleType
        : DataTypes.createArrayType(DataTypes.DoubleType, false);
    return functions.udf(ensemble, type).apply(features);
  }

  private static int[] ints(ByteBuffer b, int n) {
    int[] out = new int[n];
    b.asIntBuffer().get(out);
    b.position(b.position() + 4 * n);
    return out;
  }

  private static double[] doubles(ByteBuffer b, int n) {
    double[] out = new double[n];
    b.asDoubleBuffer().get(out);
    b.position(b.position() + 8 * n);
    return out;
  }

  @Override
  public Object call(Row row) {
    double[] x = new double[features];
    boolean[] missing = new boolean[features];
    for (int f = 0; f < features; f++) {
      if (row.isNullAt(f)) {
        missing[f] = true;
      } else {
        x[f] = row.getDouble(f);
      }
    }
    double[] sum = new double[outputs];
    float[] sum32 = float32 ? new float[outputs] : null;
    boolean[] started = new boolean[outputs];
    if (init != null) {
      for (int k = 0; k < outputs; k++) {
        sum[k] = init[k];
        if (float32) {
          sum32[k] = (float) init[k];
        }
        started[k] = true;
      }
    }
    for (int t = 0; t < root.length; t++) {
      int n = leaf(root[t], x, missing);
      int at = value[n];
      for (int j = 0; j < width[t]; j++) {
        int k = output[t] + j;
        double v = values[at + j];
        if (float32) {
          sum32[k] = started[k] ? sum32[k] + (float) v : (float) v;
        } else {
          sum[k] = started[k] ? sum[k] + v : v;
        }
        started[k] = true;
      }
    }
    if (float32) {
      for (int k = 0; k < outputs; k++) {
        sum[k] = sum32[k];
      }
    }
    return outputs == 1 ? (Object) sum[0] : sum;
  }

  private int leaf(int node, double[] x, boolean[] missing) {
    int n = node;
    while (left[n] >= 0) {
      int f = feature[n];
      boolean goLeft;
      if (missing[f]) {
        goLeft = missingLeft[n];
      } else if (categories != null && categories[n] != null) {
        // C's (int) cast truncates; a value of -1 or below, or past int's range, goes right
        double v = x[f];
        goLeft = v > -1.0 && v < 2147483648.0 && Arrays.binarySearch(categories[n], (int) v) >= 0;
      } else {
        goLeft = lessThan ? x[f] < threshold[n] : x[f] <= threshold[n];
      }
      n = goLeft ? left[n] : right[n];
    }
    return n;
  }
}
