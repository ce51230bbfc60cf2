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
  private final boolean float32;
  private final double[] init;  // null: each output starts from its first tree's value
  private final int[] root;  // per tree: its root node
  private final int[] output;  // per tree: the first output its leaves add to
  private final int[] width;  // per tree: values per leaf
  // Per node, two longs side by side (one cache line holds four nodes): the threshold's bits, then the
  // feature (bits 0-15), whether a missing value goes left (bit 16) and the first child's index (from bit 17;
  // the second child is the next node). Nodes are numbered breadth first, tree by tree, so a tree's upper
  // levels share cache lines. A leaf is its own first child and sends everything to it.
  private final long[] nodes;
  private final int[] value;  // per node: where a leaf's values start in `values`
  private final double[] values;
  private final int[][] categories;  // per node: sorted categories that go left, or null
  private final int[] groupDepth;  // per four trees: the deepest one's depth

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
    boolean lessThan = (flags & LESS_THAN) != 0;
    float32 = (flags & FLOAT32) != 0;
    init = (flags & HAS_INIT) != 0 ? doubles(b, outputs) : null;
    root = ints(b, trees);
    output = ints(b, trees);
    width = ints(b, trees);
    int[] feature = ints(b, nodes);
    double[] threshold = doubles(b, nodes);
    int[] left = ints(b, nodes);
    int[] right = ints(b, nodes);
    byte[] missingLeft = new byte[nodes];
    b.get(missingLeft);
    int[] leafValue = ints(b, nodes);
    values = doubles(b, nValues);
    int categorical = b.getInt();
    int[][] cats = categorical > 0 ? new int[nodes][] : null;
    for (int i = 0; i < categorical; i++) {
      int node = b.getInt();
      int[] set = ints(b, b.getInt());
      Arrays.sort(set);
      cats[node] = set;
    }
    if (b.hasRemaining()) {
      throw new IllegalArgumentException("trailing bytes in a tree ensemble");
    }
    if (features > 0xFFFF || 2L * nodes > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("too many features or nodes for the evaluator");
    }
    groupDepth = new int[(trees + 3) / 4];
    for (int t = 0; t < trees; t++) {
      groupDepth[t >> 2] = Math.max(groupDepth[t >> 2], depth(left, right, root[t]));
    }
    // breadth first, tree by tree: where each old node goes
    int[] at = new int[nodes];
    int[] queue = new int[nodes];
    int next = 0;
    for (int t = 0; t < trees; t++) {
      int head = next;
      int tail = next;
      queue[tail++] = root[t];
      at[root[t]] = next++;
      while (head < tail) {
        int n = queue[head++];
        if (left[n] >= 0) {
          at[left[n]] = next++;
          at[right[n]] = next++;
          queue[tail++] = left[n];
          queue[tail++] = right[n];
        }
      }
      root[t] = at[root[t]];
    }
    this.nodes = new long[2 * nodes];
    value = new int[nodes];
    categories = cats != null ? new int[nodes][] : null;
    for (int n = 0; n < nodes; n++) {
      int i = at[n];
      value[i] = leafValue[n];
      if (left[n] < 0) {  // a leaf: everything goes to itself
        this.nodes[2 * i] = Double.doubleToRawLongBits(Double.POSITIVE_INFINITY);
        this.nodes[2 * i + 1] = (1L << 16) | ((long) i << 17);
        continue;
      }
      double t = threshold[n];
      if (lessThan) {  // x < t as x <= the double below t; nothing is below -inf: NaN takes no value
        t = t == Double.NEGATIVE_INFINITY ? Double.NaN : Math.nextDown(t);
      }
      this.nodes[2 * i] = Double.doubleToRawLongBits(t);
      this.nodes[2 * i + 1] = feature[n] | ((long) (missingLeft[n] != 0 ? 1 : 0) << 16) | ((long) at[left[n]] << 17);
      if (cats != null) {
        categories[i] = cats[n];
      }
    }
  }

  private static int depth(int[] left, int[] right, int node) {
    return left[node] < 0 ? 0 : 1 + Math.max(depth(left, right, left[node]), depth(left, right, right[node]));
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
    for (int f = 0; f < features; f++) {
      x[f] = row.isNullAt(f) ? Double.NaN : row.getDouble(f);  // NaN never arrives: it is staged as null
    }
    int trees = root.length;
    int[] leaves = new int[trees];
    if (categories != null) {
      for (int t = 0; t < trees; t++) {
        leaves[t] = leafCategorical(root[t], x);
      }
    } else {
      walk(x, leaves);
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
    for (int t = 0; t < trees; t++) {
      int at = value[leaves[t]];
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

  /**
   * Every tree's leaf, four trees at a time: four independent walks in one loop keep the processor busy
   * while each waits for its next node (a single walk is a chain of dependent loads). A leaf is its own
   * child on both sides, so a walk that has arrived stays; a group takes as many steps as its deepest tree.
   * {@code x <= t}, or a missing value (NaN) where the node sends it left; thresholds of a {@code <} rule
   * arrive as the next double down, so that {@code <=} decides both.
   */
  private void walk(double[] x, int[] leaves) {
    int trees = root.length;
    int t = 0;
    for (; t + 4 <= trees; t += 4) {
      int n0 = root[t];
      int n1 = root[t + 1];
      int n2 = root[t + 2];
      int n3 = root[t + 3];
      for (int d = groupDepth[t >> 2]; d > 0; d--) {
        n0 = step(n0, x);
        n1 = step(n1, x);
        n2 = step(n2, x);
        n3 = step(n3, x);
      }
      leaves[t] = n0;
      leaves[t + 1] = n1;
      leaves[t + 2] = n2;
      leaves[t + 3] = n3;
    }
    for (; t < trees; t++) {
      int n = root[t];
      for (int d = depth(n); d > 0; d--) {
        n = step(n, x);
      }
      leaves[t] = n;
    }
  }

  private int depth(int node) {
    long info = nodes[2 * node + 1];
    int child = (int) (info >>> 17);
    return child == node ? 0 : 1 + Math.max(depth(child), depth(child + 1));
  }

  /** One node down: {@code x <= t} or a missing value the node sends left goes to the first child. */
  private int step(int n, double[] x) {
    long info = nodes[2 * n + 1];
    double v = x[(int) (info & 0xFFFF)];
    boolean first = v <= Double.longBitsToDouble(nodes[2 * n]) | ((v != v) & (info & 0x10000) != 0);
    return (int) (info >>> 17) + (first ? 0 : 1);
  }

  /** One tree's leaf, where some nodes split on categories (LightGBM). */
  private int leafCategorical(int node, double[] x) {
    int n = node;
    while (true) {
      long info = nodes[2 * n + 1];
      int child = (int) (info >>> 17);
      if (child == n) {
        return n;
      }
      double v = x[(int) (info & 0xFFFF)];
      boolean goLeft;
      if (v != v) {
        goLeft = (info & 0x10000) != 0;
      } else if (categories[n] != null) {
        // C's (int) cast truncates; a value of -1 or below, or past int's range, goes right
        goLeft = v > -1.0 && v < 2147483648.0 && Arrays.binarySearch(categories[n], (int) v) >= 0;
      } else {
        goLeft = v <= Double.longBitsToDouble(nodes[2 * n]);
      }
      n = goLeft ? child : child + 1;
    }
  }
}
