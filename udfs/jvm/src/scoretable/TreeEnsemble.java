package scoretable;

import java.io.Serializable;
import java.lang.reflect.Method;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Iterator;
import java.util.NoSuchElementException;

import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.function.FlatMapFunction;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.JoinedRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeRow;
import org.apache.spark.sql.catalyst.util.GenericArrayData;
import org.apache.spark.sql.execution.QueryExecution;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.Platform;

/**
 * A tree ensemble scored inside the JVM: the sums of its trees' leaf values, per output, for each row of
 * features (double columns, null for a missing value), appended to a DataFrame's rows as one more column.
 * Built by udfs/compiled/native.py from the same generic trees the SQL translation uses, with the same
 * arithmetic: a present value goes left where {@code x < t} (or {@code x <= t}), a categorical node where the
 * value's integer part is one of its categories, a missing value by the node's flag; leaves are added tree by
 * tree in the library's order, in double or in float32, onto an initial value or from the first tree's own value.
 *
 * <p>Why it exists: Spark's nested conditional expressions cost about 200 ns per tree and row, and whole-stage
 * code generation gives up on large ensembles; a walk over flat arrays costs a few ns per node. Why over a
 * block of rows, one tree at a time, rather than as a UDF on one row: a tree's nodes then stay in the L1
 * cache while the block's rows walk it (every tree of a 100-tree ensemble is 100 KB, more than L1 holds), and
 * no row is converted into a Java Row: for a 100-tree HistGradientBoosting model 1.9 against 2.3 us per row in
 * one thread, and 2.2-3.3 against 3.8 us inside a 4M-row run on 2 cores (benchmarks/RESULTS.md). Why eight
 * walks at once, read without bounds checks, and without the missing-value rule where a block has no missing
 * value: a step was about 20 instructions, and the walk is bound by how many the processor retires, not by
 * waiting for memory; the same model then costs 1.5 against 2.6 us per row in one thread, every sum the same
 * to the bit (benchmarks/RESULTS.md, fifteenth pass).
 */
public final class TreeEnsemble implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final int MAGIC = 0x53545245;  // "STRE"
  private static final int LESS_THAN = 1;
  private static final int FLOAT32 = 2;
  private static final int HAS_INIT = 4;
  private static final long LONGS = Platform.LONG_ARRAY_OFFSET;
  private static final long DOUBLES = Platform.DOUBLE_ARRAY_OFFSET;

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
  private final int[] treeDepth;  // per tree: its depth (the steps every walk takes: a leaf is its own child)
  private final boolean[][] fresh;  // per tree and leaf value: the first addition to its output (no init)

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
    for (int n = 0; n < nodes; n++) {  // the walk reads without bounds checks: every index must be in range
      if (left[n] >= 0 && (feature[n] < 0 || feature[n] >= features || left[n] >= nodes || right[n] < 0
          || right[n] >= nodes)) {
        throw new IllegalArgumentException("node " + n + " has a feature or a child out of range");
      }
    }
    treeDepth = new int[trees];
    fresh = new boolean[trees][];
    boolean[] started = new boolean[outputs];
    Arrays.fill(started, init != null);
    for (int t = 0; t < trees; t++) {
      treeDepth[t] = depth(left, right, root[t]);
      fresh[t] = new boolean[width[t]];
      for (int j = 0; j < width[t]; j++) {
        if (output[t] + j >= outputs || output[t] < 0) {
          throw new IllegalArgumentException("a tree adds to an output past the last");
        }
        fresh[t][j] = !started[output[t] + j];
        started[output[t] + j] = true;
      }
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
   * {@code dataset} (a Dataset of rows, Spark 3.5 or 4.x: only reached by reflection and through classes both
   * have) with one more column, {@code name}: the ensemble over {@code features}, double columns in the order
   * the trees number them; a double for one output, an array of doubles for several. The rows keep their
   * order and partitions; the plan before this point runs as it would, as the input of one more step of the
   * same stage.
   */
  public static Object append(Object dataset, byte[] model, String[] features, String name) throws Exception {
    TreeEnsemble ensemble = new TreeEnsemble(model);
    if (features.length != ensemble.features) {
      throw new IllegalArgumentException(features.length + " feature columns for " + ensemble.features + " features");
    }
    QueryExecution execution = (QueryExecution) dataset.getClass().getMethod("queryExecution").invoke(dataset);
    StructType schema = execution.analyzed().schema();
    int[] ordinals = new int[features.length];
    for (int f = 0; f < features.length; f++) {
      ordinals[f] = schema.fieldIndex(features[f]);
      if (!schema.fields()[ordinals[f]].dataType().equals(DataTypes.DoubleType)) {
        throw new IllegalArgumentException("feature column " + features[f] + " is not a double");
      }
    }
    DataType type = ensemble.outputs == 1 ? DataTypes.DoubleType
        : DataTypes.createArrayType(DataTypes.DoubleType, false);
    StructType out = schema.add(name, type, false);
    RDD<InternalRow> rows = execution.toRdd();
    JavaRDD<InternalRow> scored = rows.toJavaRDD().mapPartitions(new Scorer(ensemble, ordinals), true);
    Object session = dataset.getClass().getMethod("sparkSession").invoke(dataset);
    Method create = session.getClass().getMethod("internalCreateDataFrame", RDD.class, StructType.class,
        boolean.class);
    return create.invoke(session, scored.rdd(), out, false);
  }

  /** Whether {@code dataset}'s Spark has what {@link #append} reaches by reflection. */
  public static boolean supported(Object dataset) {
    try {
      dataset.getClass().getMethod("queryExecution");
      Object session = dataset.getClass().getMethod("sparkSession").invoke(dataset);
      session.getClass().getMethod("internalCreateDataFrame", RDD.class, StructType.class, boolean.class);
      return true;
    } catch (ReflectiveOperationException | RuntimeException e) {
      return false;
    }
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

  /** The most bytes of rows a block holds (wide rows, a document each, make smaller blocks). */
  static final long BLOCK_BYTES = 16L << 20;

  /** Rows in blocks of a few hundred (their features about 32 KB), each block scored tree by tree. */
  static int blockRows(int features) {
    return Math.max(16, Math.min(1024, 4096 / Math.max(1, features)));
  }

  /**
   * The sums for {@code n} rows whose features are {@code x[r * features + f]} (NaN: missing; {@code missing}:
   * whether any is), into
   * {@code sums[r * outputs + k]}; {@code leaves} and {@code sums32} are scratch of at least n and n * outputs.
   */
  void score(double[] x, int n, boolean missing, double[] sums, int[] leaves, float[] sums32) {
    int trees = root.length;
    for (int r = 0; r < n; r++) {
      for (int k = 0; k < outputs; k++) {
        double start = init != null ? init[k] : 0.0;
        sums[r * outputs + k] = start;
        if (float32) {
          sums32[r * outputs + k] = (float) start;
        }
      }
    }
    for (int t = 0; t < trees; t++) {
      if (categories != null) {
        for (int r = 0; r < n; r++) {
          leaves[r] = leafCategorical(root[t], x, r * features);
        }
      } else {
        walk(root[t], treeDepth[t], x, n, leaves, missing);
      }
      for (int j = 0; j < width[t]; j++) {
        if (float32) {
          add32(leaves, n, j, output[t] + j, fresh[t][j], sums32);
        } else {
          add(leaves, n, j, output[t] + j, fresh[t][j], sums);
        }
      }
    }
    if (float32) {
      for (int i = 0; i < n * outputs; i++) {
        sums[i] = sums32[i];
      }
    }
  }

  /** Each row's leaf value {@code j} added to its output {@code k} (or taken as its first value). */
  private void add(int[] leaves, int n, int j, int k, boolean first, double[] sums) {
    for (int r = 0; r < n; r++) {
      double v = values[value[leaves[r]] + j];
      int i = r * outputs + k;
      sums[i] = first ? v : sums[i] + v;
    }
  }

  /** {@link #add} in float32 (XGBoost). */
  private void add32(int[] leaves, int n, int j, int k, boolean first, float[] sums) {
    for (int r = 0; r < n; r++) {
      float v = (float) values[value[leaves[r]] + j];
      int i = r * outputs + k;
      sums[i] = first ? v : sums[i] + v;
    }
  }

  /**
   * One tree's leaf for each of {@code n} rows, eight rows at a time: eight independent walks in one loop keep
   * the processor busy while each waits for its next node (a single walk is a chain of dependent loads). A
   * leaf is its own child on both sides, so a walk that has arrived stays; every walk takes the tree's depth
   * in steps, without a branch. {@code missing}: whether any of the rows has a missing value (NaN); without
   * one, a step skips the node's missing-value rule.
   */
  private void walk(int top, int depth, double[] x, int n, int[] leaves, boolean missing) {
    long[] nd = nodes;
    long row = 8L * features;  // bytes
    long first = (long) top << 4;
    int r = 0;
    for (; r + 8 <= n; r += 8) {
      long o = DOUBLES + r * row;
      long n0 = first;
      long n1 = first;
      long n2 = first;
      long n3 = first;
      long n4 = first;
      long n5 = first;
      long n6 = first;
      long n7 = first;
      if (missing) {
        for (int d = depth; d > 0; d--) {
          n0 = stepMissing(nd, n0, x, o);
          n1 = stepMissing(nd, n1, x, o + row);
          n2 = stepMissing(nd, n2, x, o + 2 * row);
          n3 = stepMissing(nd, n3, x, o + 3 * row);
          n4 = stepMissing(nd, n4, x, o + 4 * row);
          n5 = stepMissing(nd, n5, x, o + 5 * row);
          n6 = stepMissing(nd, n6, x, o + 6 * row);
          n7 = stepMissing(nd, n7, x, o + 7 * row);
        }
      } else {
        for (int d = depth; d > 0; d--) {
          n0 = step(nd, n0, x, o);
          n1 = step(nd, n1, x, o + row);
          n2 = step(nd, n2, x, o + 2 * row);
          n3 = step(nd, n3, x, o + 3 * row);
          n4 = step(nd, n4, x, o + 4 * row);
          n5 = step(nd, n5, x, o + 5 * row);
          n6 = step(nd, n6, x, o + 6 * row);
          n7 = step(nd, n7, x, o + 7 * row);
        }
      }
      leaves[r] = (int) (n0 >>> 4);
      leaves[r + 1] = (int) (n1 >>> 4);
      leaves[r + 2] = (int) (n2 >>> 4);
      leaves[r + 3] = (int) (n3 >>> 4);
      leaves[r + 4] = (int) (n4 >>> 4);
      leaves[r + 5] = (int) (n5 >>> 4);
      leaves[r + 6] = (int) (n6 >>> 4);
      leaves[r + 7] = (int) (n7 >>> 4);
    }
    for (; r < n; r++) {
      long node = first;
      for (int d = depth; d > 0; d--) {
        node = stepMissing(nd, node, x, DOUBLES + r * row);
      }
      leaves[r] = (int) (node >>> 4);
    }
  }

  /*
   * One node down for the row whose features start at byte offset {@code o} of {@code x}; {@code node} is the
   * node's byte offset in {@code nodes} past the array's header (16 bytes a node). {@code x <= t} goes to the
   * first child; thresholds of a {@code <} rule arrive as the next double down, so that {@code <=} decides both.
   * Read without bounds checks (Spark's Platform): half the instructions of a step, about twice as fast. The
   * constructor has checked that every feature is below {@code features} and every child is a node, so no
   * offset leaves its array.
   */
  private static long step(long[] nd, long node, double[] x, long o) {
    long at = LONGS + node;
    long info = Platform.getLong(nd, at + 8);
    boolean first = Platform.getDouble(x, o + ((info & 0xFFFF) << 3)) <= Platform.getDouble(nd, at);
    return ((info >>> 17) << 4) + (first ? 0 : 16);
  }

  /** {@link #step} where the value may be missing (NaN): it goes to the first child if the node says so. */
  private static long stepMissing(long[] nd, long node, double[] x, long o) {
    long at = LONGS + node;
    long info = Platform.getLong(nd, at + 8);
    double v = Platform.getDouble(x, o + ((info & 0xFFFF) << 3));
    boolean first = v <= Platform.getDouble(nd, at) | ((v != v) & (info & 0x10000) != 0);
    return ((info >>> 17) << 4) + (first ? 0 : 16);
  }

  /** A partition's rows, each with the ensemble's value appended, scored in blocks. */
  private static final class Scorer implements FlatMapFunction<Iterator<InternalRow>, InternalRow> {
    private static final long serialVersionUID = 1L;
    private final TreeEnsemble ensemble;
    private final int[] ordinals;

    Scorer(TreeEnsemble ensemble, int[] ordinals) {
      this.ensemble = ensemble;
      this.ordinals = ordinals;
    }

    @Override
    public Iterator<InternalRow> call(Iterator<InternalRow> rows) {
      return new Blocks(ensemble, ordinals, rows);
    }
  }

  /**
   * Reads a block of rows ahead (copies: the rows before it reuse their objects), scores it, and hands the
   * rows out joined to their value; the consumer (Spark's scan of an RDD) copies each row as it takes it.
   */
  private static final class Blocks implements Iterator<InternalRow> {
    private final TreeEnsemble e;
    private final int[] ordinals;
    private final Iterator<InternalRow> rows;
    private final InternalRow[] block;
    private final double[] x;
    private final double[] sums;
    private final int[] leaves;
    private final float[] sums32;
    private final GenericInternalRow value = new GenericInternalRow(1);
    private final JoinedRow joined = new JoinedRow();
    private int size;
    private int next;

    Blocks(TreeEnsemble e, int[] ordinals, Iterator<InternalRow> rows) {
      this.e = e;
      this.ordinals = ordinals;
      this.rows = rows;
      int n = blockRows(e.features);
      block = new InternalRow[n];
      x = new double[n * e.features];
      sums = new double[n * e.outputs];
      leaves = new int[n];
      sums32 = e.float32 ? new float[n * e.outputs] : null;
    }

    @Override
    public boolean hasNext() {
      if (next < size) {
        return true;
      }
      fill();
      return size > 0;
    }

    private void fill() {
      Arrays.fill(block, 0, size, null);
      size = 0;
      next = 0;
      int features = e.features;
      long bytes = 0;
      boolean missing = false;
      while (size < block.length && bytes < BLOCK_BYTES && rows.hasNext()) {
        InternalRow row = rows.next().copy();
        missing |= read(row, size * features);
        block[size++] = row;
        if (row instanceof UnsafeRow) {
          bytes += ((UnsafeRow) row).getSizeInBytes();
        }
      }
      if (size > 0) {
        e.score(x, size, missing, sums, leaves, sums32);
      }
    }

    /**
     * A row's features into {@code x} from {@code o} (its own method: the JIT compiles it after a few rows);
     * whether any is missing (null or NaN).
     */
    private boolean read(InternalRow row, int o) {
      boolean missing = false;
      for (int f = 0; f < ordinals.length; f++) {
        double v = row.isNullAt(ordinals[f]) ? Double.NaN : row.getDouble(ordinals[f]);
        x[o + f] = v;
        missing |= v != v;
      }
      return missing;
    }

    @Override
    public InternalRow next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      int r = next++;
      if (e.outputs == 1) {
        value.update(0, sums[r]);
      } else {
        value.update(0, new GenericArrayData(Arrays.copyOfRange(sums, r * e.outputs, (r + 1) * e.outputs)));
      }
      return joined.apply(block[r], value);
    }
  }

  /** One tree's leaf for the row whose features start at {@code x[o]}, where some nodes split on categories
   * (LightGBM). */
  private int leafCategorical(int node, double[] x, int o) {
    int n = node;
    while (true) {
      long info = nodes[2 * n + 1];
      int child = (int) (info >>> 17);
      if (child == n) {
        return n;
      }
      double v = x[o + (int) (info & 0xFFFF)];
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
