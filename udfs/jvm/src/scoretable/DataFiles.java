package scoretable;

import java.io.FileNotFoundException;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocatedFileStatus;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RemoteIterator;
import org.apache.parquet.format.converter.ParquetMetadataConverter;
import org.apache.parquet.hadoop.ParquetFileReader;
import org.apache.parquet.hadoop.metadata.BlockMetaData;
import org.apache.parquet.hadoop.metadata.ColumnChunkMetaData;
import org.apache.parquet.hadoop.metadata.ParquetMetadata;

/**
 * Listings and Parquet footers in one call from Python each (spark_jobs/fs.py). Asked for file by file from
 * Python, every file costs a few py4j round trips (a status, its path, its size, its footer's row groups), which
 * cost more than the listing and the footer themselves: about 1.4 s for a run's 60 staged files in a fresh JVM.
 * Requests and answers are JSON, so that no path or column name needs escaping.
 */
public final class DataFiles {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final int THREADS = 8;  // footers read at once (an object store answers each in a round trip)

    private DataFiles() {
    }

    /**
     * The data files under each root (a JSON list of paths as Hadoop prints them), recursively, as
     * `[[[path, bytes, modified millis], ...], ...]`: what Spark's file readers read, without entries whose name
     * starts with `_` (unless it holds `=`, a partition folder) or `.`, or that are being copied in
     * (`._COPYING_`). A root that does not exist holds none.
     */
    public static String list(Configuration conf, String rootsJson) throws IOException {
        ArrayNode found = JsonNodeFactory.instance.arrayNode();
        for (JsonNode root : JSON.readTree(rootsJson)) {
            ArrayNode files = found.addArray();
            Path path = new Path(root.asText());
            FileSystem fs = path.getFileSystem(conf);
            String base = stripSlashes(fs.makeQualified(path).toString());
            RemoteIterator<LocatedFileStatus> listed;
            try {
                listed = fs.listFiles(path, true);
                while (listed.hasNext()) {
                    LocatedFileStatus status = listed.next();
                    String name = status.getPath().toString();
                    if (readByReaders(name.substring(Math.min(base.length(), name.length())))) {
                        files.addArray().add(name).add(status.getLen()).add(status.getModificationTime());
                    }
                }
            } catch (FileNotFoundException e) {
                files.removeAll();
            }
        }
        return JSON.writeValueAsString(found);
    }

    private static String stripSlashes(String text) {
        int end = text.length();
        while (end > 0 && text.charAt(end - 1) == '/') {
            end--;
        }
        return text.substring(0, end);
    }

    private static boolean readByReaders(String relative) {
        String[] parts = relative.split("/");
        for (String part : parts) {
            if (part.isEmpty()) {
                continue;
            }
            if ((part.startsWith("_") || part.startsWith(".")) && !part.contains("=")) {
                return false;
            }
        }
        return !parts[parts.length - 1].endsWith("._COPYING_");
    }

    /**
     * The footers of `{"paths": [...], "plain": [index, ...], "strict": bool}`: per path `[rows, plain]`, where
     * plain (for the paths at the indexes in "plain", else null) lists the top-level columns whose first row group
     * has no dictionary page (null where the file has no row group). A footer that cannot be read raises where
     * "strict", else gives `[null, null]`.
     */
    public static String footers(Configuration conf, String requestJson) throws Exception {
        JsonNode request = JSON.readTree(requestJson);
        boolean strict = request.get("strict").asBoolean();
        List<String> paths = new ArrayList<>();
        for (JsonNode p : request.get("paths")) {
            paths.add(p.asText());
        }
        boolean[] plain = new boolean[paths.size()];
        for (JsonNode i : request.get("plain")) {
            if (i.asInt() < plain.length) {
                plain[i.asInt()] = true;
            }
        }
        ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, Math.min(THREADS, paths.size())), r -> {
            Thread t = new Thread(r, "score-table-footers");
            t.setDaemon(true);
            return t;
        });
        try {
            List<Future<ParquetMetadata>> read = new ArrayList<>();
            for (String p : paths) {
                read.add(pool.submit(() -> footer(conf, p)));
            }
            ArrayNode found = JsonNodeFactory.instance.arrayNode();
            for (int i = 0; i < paths.size(); i++) {
                ParquetMetadata metadata;
                try {
                    metadata = read.get(i).get();
                } catch (java.util.concurrent.ExecutionException e) {
                    if (strict) {
                        throw e.getCause() instanceof Exception ? (Exception) e.getCause() : e;
                    }
                    found.addArray().addNull().addNull();
                    continue;
                }
                ArrayNode entry = found.addArray();
                long rows = 0;
                for (BlockMetaData block : metadata.getBlocks()) {
                    rows += block.getRowCount();
                }
                entry.add(rows);
                if (plain[i] && !metadata.getBlocks().isEmpty()) {
                    ArrayNode columns = entry.addArray();
                    for (ColumnChunkMetaData chunk : metadata.getBlocks().get(0).getColumns()) {
                        if (chunk.getPath().size() == 1 && !chunk.hasDictionaryPage()) {
                            columns.add(chunk.getPath().toDotString());
                        }
                    }
                } else {
                    entry.addNull();
                }
            }
            return JSON.writeValueAsString(found);
        } finally {
            pool.shutdownNow();
        }
    }

    @SuppressWarnings("deprecation")
    private static ParquetMetadata footer(Configuration conf, String path) throws IOException {
        return ParquetFileReader.readFooter(conf, new Path(path), ParquetMetadataConverter.NO_FILTER);
    }
}
