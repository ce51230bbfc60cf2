package scoretable;

import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.mapreduce.Job;
import org.apache.hadoop.mapreduce.TaskAttemptContext;
import org.apache.parquet.bytes.BytesInput;
import org.apache.parquet.column.ColumnDescriptor;
import org.apache.parquet.column.ColumnWriteStore;
import org.apache.parquet.column.ColumnWriter;
import org.apache.parquet.column.Encoding;
import org.apache.parquet.column.ParquetProperties;
import org.apache.parquet.column.page.DictionaryPage;
import org.apache.parquet.column.page.PageWriteStore;
import org.apache.parquet.column.page.PageWriter;
import org.apache.parquet.column.statistics.SizeStatistics;
import org.apache.parquet.column.statistics.geospatial.GeospatialStatistics;
import org.apache.parquet.column.values.bloomfilter.BloomFilterWriteStore;
import org.apache.parquet.column.statistics.Statistics;
import org.apache.parquet.hadoop.ParquetOutputFormat;
import org.apache.parquet.hadoop.api.WriteSupport;
import org.apache.parquet.io.ColumnIOFactory;
import org.apache.parquet.io.api.Binary;
import org.apache.parquet.io.api.RecordConsumer;
import org.apache.parquet.schema.MessageType;
import org.apache.parquet.schema.Type;
import org.apache.spark.sql.DataFrameWriter;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.execution.datasources.OutputWriter;
import org.apache.spark.sql.execution.datasources.OutputWriterFactory;
import org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat;
import org.apache.spark.sql.execution.datasources.parquet.ParquetReadSupport;
import org.apache.spark.sql.execution.datasources.parquet.ParquetWriteSupport;
import org.apache.spark.sql.execution.datasources.parquet.SparkToParquetSchemaConverter;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * Parquet files in which some columns hold one value in every row (a run's lineage), written at a cost per page,
 * not per row. Spark's own writer writes the rows' columns, which are all the rows carry; each row group then
 * gets the constant columns as pages Parquet's own column writer encoded once (a dictionary of one value and
 * runs of its index, with their statistics), repeated for as many rows as the group holds. The files are what
 * Spark writes for the whole schema, in the schema's column order.
 */
public class ConstantColumns extends ParquetFileFormat {
  /** The files' data schema (JSON), the constant columns in their places. */
  public static final String SCHEMA = "scoretable.constants.schema";
  /** The constant columns' names, comma separated. */
  public static final String NAMES = "scoretable.constants.names";
  /** Each constant column's value, in NAMES' order: Base64 of its text (timestamps in microseconds), "-" for null. */
  public static final String VALUES = "scoretable.constants.values";
  /**
   * The last of NAMES holds one value per partition folder: `folder:value` pairs, comma separated, each Base64 of
   * its text; a folder is named as Spark names it (`ds=2026-11-01`, several partition columns joined by `/`).
   */
  public static final String FOLDERS = "scoretable.constants.folders";
  /** The value of FOLDERS for the file being opened (the factory sets it, the write support reads it). */
  static final String FOLDER_VALUE = "scoretable.constants.folder.value";

  /**
   * Saves `writer`'s rows with this format at `path`. Spark finds a format by name through the calling thread's
   * context class loader, which has this jar only on the thread that added it to the session.
   */
  public static void save(DataFrameWriter<Row> writer, String path) {
    Thread thread = Thread.currentThread();
    ClassLoader before = thread.getContextClassLoader();
    thread.setContextClassLoader(ConstantColumns.class.getClassLoader());
    try {
      writer.format(ConstantColumns.class.getName()).save(path);
    } finally {
      thread.setContextClassLoader(before);
    }
  }

  @Override
  public OutputWriterFactory prepareWrite(SparkSession session, Job job,
                                          scala.collection.immutable.Map<String, String> options, StructType dataSchema) {
    OutputWriterFactory factory = super.prepareWrite(session, job, options, dataSchema);
    job.getConfiguration().set(ParquetOutputFormat.WRITE_SUPPORT_CLASS, Support.class.getName());
    return new Factory(factory);
  }

  @Override
  public String toString() {
    return "Parquet (constant columns)";
  }

  /** The internals this writer reaches, by name: present in the Spark and Parquet it runs with, or not used. */
  private static final String[][] REACHED = {
      {"org.apache.spark.sql.execution.datasources.parquet.ParquetOutputWriter", "recordWriter"},
      {"org.apache.parquet.hadoop.ParquetRecordWriter", "internalWriter"},
      {"org.apache.parquet.hadoop.InternalParquetRecordWriter", "writeSupport", "columnStore", "pageStore",
          "bloomFilterWriteStore", "recordConsumer", "props", "validating"},
      {"org.apache.parquet.column.statistics.SizeStatistics"},
      {"org.apache.parquet.column.statistics.geospatial.GeospatialStatistics"},
  };

  /** Whether this Spark's Parquet writer has what this writer reaches into (else the columns go in the rows). */
  public static boolean supported() {
    try {
      for (String[] reached : REACHED) {
        Class<?> type = Class.forName(reached[0], false, ConstantColumns.class.getClassLoader());
        for (int i = 1; i < reached.length; i++) type.getDeclaredField(reached[i]);
      }
      return true;
    } catch (ReflectiveOperationException | LinkageError e) {
      return false;
    }
  }

  private static Field field(Class<?> type, String name) throws NoSuchFieldException {
    Field f = type.getDeclaredField(name);
    f.setAccessible(true);
    return f;
  }

  /** The settings of Spark's writer that change how it encodes a value. */
  private static final String[] ENCODING = {"spark.sql.parquet.outputTimestampType",
      "spark.sql.parquet.writeLegacyFormat", "spark.sql.parquet.int96RebaseModeInWrite",
      "spark.sql.parquet.datetimeRebaseModeInWrite", "spark.sql.session.timeZone"};
  /** Encoded constants and their pages, per JVM: a task writes several files, an executor runs many tasks. */
  private static final ConcurrentHashMap<String, Value[]> ENCODED = new ConcurrentHashMap<>();
  private static final ConcurrentHashMap<String, Template> PAGES = new ConcurrentHashMap<>();

  /** Spark's Parquet writers, each with its write support attached to the record writer it runs in. */
  static final class Factory extends OutputWriterFactory {
    private final OutputWriterFactory parquet;

    Factory(OutputWriterFactory parquet) {
      this.parquet = parquet;
    }

    @Override
    public String getFileExtension(TaskAttemptContext context) {
      return parquet.getFileExtension(context);
    }

    @Override
    public OutputWriter newInstance(String path, StructType dataSchema, TaskAttemptContext context) {
      Configuration conf = context.getConfiguration();
      String folders = conf.get(FOLDERS);
      if (folders != null) conf.set(FOLDER_VALUE, valueOf(folders, path));  // read as the writer opens
      OutputWriter writer = parquet.newInstance(path, dataSchema, context);
      try {  // the fields `supported` checked
        Object records = field(writer.getClass(), "recordWriter").get(writer);
        Object internal = field(records.getClass(), "internalWriter").get(records);
        Support support = (Support) field(internal.getClass(), "writeSupport").get(internal);
        support.attach(internal);
      } catch (ReflectiveOperationException e) {
        writer.close();
        throw new IllegalStateException("this Parquet writer cannot take constant columns", e);
      }
      return writer;
    }
  }

  /**
   * The value (as Base64 text) that FOLDERS gives the folder `path` is in: the folder's last segments, as many as
   * a folder name there has. A file in a folder without a value is an error, never a file without its column.
   */
  static String valueOf(String folders, String path) {
    String folder = path.substring(0, Math.max(0, path.lastIndexOf('/')));
    Base64.Decoder base64 = Base64.getDecoder();
    for (String pair : folders.split(",")) {
      int colon = pair.indexOf(':');
      String name = new String(base64.decode(pair.substring(0, colon)), StandardCharsets.UTF_8);
      if (name.isEmpty() || folder.endsWith("/" + name)) return pair.substring(colon + 1);
    }
    throw new IllegalStateException("no value of the per-partition column for the folder of " + path);
  }

  /**
   * The file's schema for Parquet's file writer and page store; the rows' columns alone for the column store and
   * record consumer that Spark's write support writes rows into (so no row carries a constant).
   */
  public static final class Support extends WriteSupport<InternalRow> {
    private final ParquetWriteSupport rows = new ParquetWriteSupport();
    private MessageType rowSchema;
    private ColumnDescriptor[] constants;
    private Value[] values;     // null: a null constant
    private Object internal;    // the record writer this support writes in
    private Field columnStore, pageStore, bloomFilters, recordConsumer, props, validating;

    @Override
    public WriteContext init(Configuration conf) {
      StructType full = (StructType) DataType.fromJson(conf.get(SCHEMA));
      String given = conf.get(NAMES);
      String[] names = given.isEmpty() ? new String[0] : given.split(",", -1);
      String file = conf.get(FOLDERS) != null ? conf.get(FOLDER_VALUE) : null;  // this file's, after the rest
      String all = file == null ? conf.get(VALUES) : conf.get(VALUES).isEmpty() ? file : conf.get(VALUES) + "," + file;
      String[] texts = all.split(",", -1);
      StructField[] fields = new StructField[names.length];
      Object[] row = new Object[names.length];
      for (int k = 0; k < names.length; k++) {
        fields[k] = full.apply(names[k]);
        row[k] = texts[k].equals("-") ? null
            : parse(new String(Base64.getDecoder().decode(texts[k]), StandardCharsets.UTF_8), fields[k].dataType());
      }
      // each constant as Spark's writer gives it to Parquet, from a one-row row (once per JVM and settings)
      StringBuilder key = new StringBuilder(conf.get(SCHEMA)).append('\n').append(given).append('\n')
          .append(all);
      for (String setting : ENCODING) key.append('\n').append(conf.get(setting));
      values = ENCODED.get(key.toString());
      if (values == null) {
        Configuration one = new Configuration(conf);
        one.set(ParquetWriteSupport.SPARK_ROW_SCHEMA(), new StructType(fields).json());
        ParquetWriteSupport encoder = new ParquetWriteSupport();
        encoder.init(one);
        values = new Value[names.length];
        encoder.prepareForWrite(new Recorder(values));
        encoder.write(new GenericInternalRow(row));
        ENCODED.put(key.toString(), values);
      }

      WriteContext context = rows.init(conf);
      rowSchema = context.getSchema();
      MessageType schema = new SparkToParquetSchemaConverter(conf).convert(full);
      constants = new ColumnDescriptor[names.length];
      for (int k = 0; k < names.length; k++) {
        constants[k] = schema.getColumnDescription(new String[] {names[k]});
      }
      Map<String, String> meta = new HashMap<>(context.getExtraMetaData());
      meta.put(ParquetReadSupport.SPARK_METADATA_KEY(), full.json());
      return new WriteContext(schema, meta);
    }

    private static Object parse(String text, DataType type) {
      if (type.equals(DataTypes.StringType)) return UTF8String.fromString(text);
      if (type.equals(DataTypes.TimestampType) || type.equals(DataTypes.LongType)) return Long.parseLong(text);
      if (type.equals(DataTypes.IntegerType)) return Integer.parseInt(text);
      throw new IllegalArgumentException("a constant column of type " + type.simpleString());
    }

    void attach(Object internal) throws ReflectiveOperationException {
      Class<?> type = internal.getClass();
      columnStore = field(type, "columnStore");
      pageStore = field(type, "pageStore");
      bloomFilters = field(type, "bloomFilterWriteStore");
      recordConsumer = field(type, "recordConsumer");
      props = field(type, "props");
      validating = field(type, "validating");
      this.internal = internal;
      rowGroup();
    }

    @Override
    public void prepareForWrite(RecordConsumer consumer) {
      if (internal != null) {  // a new row group (the first one's comes before `attach`)
        try {
          rowGroup();
        } catch (ReflectiveOperationException e) {
          throw new IllegalStateException(e);
        }
      }
    }

    /** The record writer's stores for a row group, replaced by ones over the rows' columns. */
    private void rowGroup() throws ReflectiveOperationException {
      PageWriteStore pages = (PageWriteStore) pageStore.get(internal);
      ParquetProperties properties = (ParquetProperties) props.get(internal);
      ((ColumnWriteStore) columnStore.get(internal)).close();
      ColumnWriteStore rowStore = properties.newColumnWriteStore(rowSchema, pages,
          (BloomFilterWriteStore) bloomFilters.get(internal));
      ColumnWriteStore store = new Store(rowStore, pages, properties);
      RecordConsumer consumer = new ColumnIOFactory(validating.getBoolean(internal))
          .getColumnIO(rowSchema).getRecordWriter(store);
      columnStore.set(internal, store);
      recordConsumer.set(internal, consumer);
      rows.prepareForWrite(consumer);
    }

    @Override
    public void write(InternalRow row) {
      rows.write(row);
    }

    @Override
    public FinalizedWriteContext finalizeWrite() {
      return rows.finalizeWrite();
    }

    @Override
    public String getName() {
      return rows.getName();
    }

    /** The rows' column store; at the row group's end, the constant columns' pages for its rows. */
    private final class Store implements ColumnWriteStore {
      private final ColumnWriteStore rows;
      private final PageWriteStore pages;
      private final ParquetProperties properties;
      private long count;

      Store(ColumnWriteStore rows, PageWriteStore pages, ParquetProperties properties) {
        this.rows = rows;
        this.pages = pages;
        this.properties = properties;
      }

      @Override public ColumnWriter getColumnWriter(ColumnDescriptor path) { return rows.getColumnWriter(path); }
      @Override public void endRecord() { count++; rows.endRecord(); }
      @Override public long getAllocatedSize() { return rows.getAllocatedSize(); }
      @Override public long getBufferedSize() { return rows.getBufferedSize(); }
      @Override public String memUsageString() { return rows.memUsageString(); }
      @Override public void close() { rows.close(); }
      @Override public boolean isColumnFlushNeeded() { return rows.isColumnFlushNeeded(); }

      @Override
      public void flush() {
        rows.flush();
        if (count == 0) return;
        try {
          int page = Integer.highestOneBit(Math.max(1, properties.getPageRowCountLimit()));
          for (int k = 0; k < constants.length; k++) {
            PageWriter out = pages.getPageWriter(constants[k]);
            boolean dictionary = false;
            long left = count;
            // pages of `page` rows, then the rest in pages of the powers of two below it: a small file asks
            // for no more encoding than its own rows
            for (int size = page; size > 0; size >>= 1) {
              long times = size == page ? left / page : (left & size) != 0 ? 1 : 0;
              if (times == 0) continue;
              Template t = template(k, size);
              if (!dictionary && t.dictionary != null) {
                out.writeDictionaryPage(t.dictionary);
                dictionary = true;
              }
              for (long i = 0; i < times; i++) t.replay(out);
              left -= times * size;
            }
          }
        } catch (IOException e) {
          throw new IllegalStateException(e);
        }
        count = 0;
      }

      /** The pages of `rows` rows of the constant `k`, as Parquet's column writer encodes them here. */
      private Template template(int k, int rows) throws IOException {
        ColumnDescriptor column = constants[k];
        String key = column + "\n" + (values[k] == null ? "null" : values[k].key()) + "\n" + rows + "\n"
            + properties.getWriterVersion() + properties.isDictionaryEnabled(column)
            + properties.getStatisticsEnabled(column) + properties.getSizeStatisticsEnabled(column);
        Template t = PAGES.get(key);
        if (t == null) {
          t = Template.of(column, values[k], rows, properties);
          PAGES.put(key, t);
        }
        return t;
      }
    }
  }

  /** A constant column's pages for some number of rows, as Parquet's column writer encoded them. */
  static final class Template implements PageWriteStore, PageWriter {
    private final List<Object[]> calls = new ArrayList<>();
    DictionaryPage dictionary;

    static Template of(ColumnDescriptor column, Value value, int rows, ParquetProperties properties) throws IOException {
      Template t = new Template();
      Type type = new MessageType("constant", column.getPrimitiveType()).getType(0);
      MessageType schema = new MessageType("constant", type);
      ColumnWriteStore store = properties.newColumnWriteStore(schema, t);
      RecordConsumer consumer = new ColumnIOFactory().getColumnIO(schema).getRecordWriter(store);
      String name = type.getName();
      for (int i = 0; i < rows; i++) {
        consumer.startMessage();
        if (value != null) {
          consumer.startField(name, 0);
          value.write(consumer);
          consumer.endField(name, 0);
        }
        consumer.endMessage();
      }
      consumer.flush();
      store.flush();
      store.close();
      return t;
    }

    void replay(PageWriter out) throws IOException {
      for (Object[] c : calls) {
        if (c[0] instanceof BytesInput) {
          out.writePage((BytesInput) c[0], (Integer) c[1], (Integer) c[2], (Statistics<?>) c[3], (SizeStatistics) c[4],
              (GeospatialStatistics) c[5], (Encoding) c[6], (Encoding) c[7], (Encoding) c[8]);
        } else {
          out.writePageV2((Integer) c[0], (Integer) c[1], (Integer) c[2], (BytesInput) c[3], (BytesInput) c[4],
              (Encoding) c[5], (BytesInput) c[6], (Statistics<?>) c[7], (SizeStatistics) c[8],
              (GeospatialStatistics) c[9]);
        }
      }
    }

    private static BytesInput kept(BytesInput b) throws IOException {
      return BytesInput.from(b.toByteArray());
    }

    @Override public PageWriter getPageWriter(ColumnDescriptor path) { return this; }

    @Override
    public void writePage(BytesInput bytes, int valueCount, Statistics<?> statistics, Encoding rl, Encoding dl,
                          Encoding values) throws IOException {
      throw new UnsupportedOperationException("a page without its row count");
    }

    @Override
    public void writePage(BytesInput bytes, int valueCount, int rowCount, Statistics<?> statistics, Encoding rl,
                          Encoding dl, Encoding values) throws IOException {
      writePage(bytes, valueCount, rowCount, statistics, null, rl, dl, values);
    }

    @Override
    public void writePage(BytesInput bytes, int valueCount, int rowCount, Statistics<?> statistics,
                          SizeStatistics sizes, Encoding rl, Encoding dl, Encoding values) throws IOException {
      writePage(bytes, valueCount, rowCount, statistics, sizes, null, rl, dl, values);
    }

    @Override
    public void writePage(BytesInput bytes, int valueCount, int rowCount, Statistics<?> statistics,
                          SizeStatistics sizes, GeospatialStatistics geo, Encoding rl, Encoding dl, Encoding values)
        throws IOException {
      calls.add(new Object[] {kept(bytes), valueCount, rowCount, statistics, sizes, geo, rl, dl, values});
    }

    @Override
    public void writePageV2(int rowCount, int nullCount, int valueCount, BytesInput repetitionLevels,
                            BytesInput definitionLevels, Encoding dataEncoding, BytesInput data,
                            Statistics<?> statistics) throws IOException {
      writePageV2(rowCount, nullCount, valueCount, repetitionLevels, definitionLevels, dataEncoding, data, statistics,
          null);
    }

    @Override
    public void writePageV2(int rowCount, int nullCount, int valueCount, BytesInput repetitionLevels,
                            BytesInput definitionLevels, Encoding dataEncoding, BytesInput data,
                            Statistics<?> statistics, SizeStatistics sizes) throws IOException {
      writePageV2(rowCount, nullCount, valueCount, repetitionLevels, definitionLevels, dataEncoding, data, statistics,
          sizes, null);
    }

    @Override
    public void writePageV2(int rowCount, int nullCount, int valueCount, BytesInput repetitionLevels,
                            BytesInput definitionLevels, Encoding dataEncoding, BytesInput data,
                            Statistics<?> statistics, SizeStatistics sizes, GeospatialStatistics geo) throws IOException {
      calls.add(new Object[] {rowCount, nullCount, valueCount, kept(repetitionLevels), kept(definitionLevels),
          dataEncoding, kept(data), statistics, sizes, geo});
    }

    @Override public void close() {}
    @Override public long getMemSize() { return 0; }
    @Override public long allocatedSize() { return 0; }
    @Override public void writeDictionaryPage(DictionaryPage page) throws IOException { dictionary = page.copy(); }
    @Override public String memUsageString(String prefix) { return prefix + " constant column template"; }
  }

  /** One constant's value as Spark's writer gave it to Parquet. */
  abstract static class Value {
    private final String key;

    Value(String key) {
      this.key = key;
    }

    abstract void write(RecordConsumer out);

    /** What the value is, for the caches. */
    String key() {
      return key;
    }
  }

  /** Records the values Spark's writer gives a one-row record (flat columns only). */
  private static final class Recorder extends RecordConsumer {
    private final Value[] values;
    private int field = -1;

    Recorder(Value[] values) {
      this.values = values;
    }

    private void set(Value v) {
      if (field < 0 || values[field] != null) throw new IllegalStateException("one flat value per constant column");
      values[field] = v;
    }

    @Override public void startMessage() {}
    @Override public void endMessage() {}
    @Override public void startField(String name, int index) { field = index; }
    @Override public void endField(String name, int index) { field = -1; }
    @Override public void startGroup() { throw new IllegalStateException("a constant column must not be nested"); }
    @Override public void endGroup() { throw new IllegalStateException("a constant column must not be nested"); }
    @Override public void addInteger(final int v) {
      set(new Value("int " + v) { void write(RecordConsumer o) { o.addInteger(v); } });
    }
    @Override public void addLong(final long v) {
      set(new Value("long " + v) { void write(RecordConsumer o) { o.addLong(v); } });
    }
    @Override public void addBoolean(final boolean v) {
      set(new Value("boolean " + v) { void write(RecordConsumer o) { o.addBoolean(v); } });
    }
    @Override public void addFloat(final float v) {
      set(new Value("float " + Float.floatToRawIntBits(v)) { void write(RecordConsumer o) { o.addFloat(v); } });
    }
    @Override public void addDouble(final double v) {
      set(new Value("double " + Double.doubleToRawLongBits(v)) { void write(RecordConsumer o) { o.addDouble(v); } });
    }
    @Override public void addBinary(Binary v) {
      final Binary kept = Binary.fromConstantByteArray(v.getBytes());  // Spark reuses its buffers
      set(new Value("binary " + Base64.getEncoder().encodeToString(kept.getBytes())) {
        void write(RecordConsumer o) { o.addBinary(kept); }
      });
    }
  }
}
