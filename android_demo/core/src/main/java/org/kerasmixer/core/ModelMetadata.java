package org.kerasmixer.core;

import java.io.File;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * What a keras_mixer export's TFLite metadata says about its output: keras_mixer names the output tensor's
 * metadata "logits" or "probability" (a softmax head), so the app knows whether to apply softmax instead of
 * guessing from the values. Reads the two flatbuffers (the TFLite model, then the metadata buffer inside it) by the
 * published schemas' field indices, every offset bounds-checked; anything unexpected is "unknown".
 */
public final class ModelMetadata {
  /** What the output scores are. */
  public enum OutputKind {
    LOGITS,
    PROBABILITY,
    UNKNOWN
  }

  private static final String METADATA_NAME = "TFLITE_METADATA";
  // field indices of the schemas (tensorflow/lite/schema/schema.fbs, metadata_schema.fbs)
  private static final int MODEL_BUFFERS = 4;
  private static final int MODEL_METADATA = 6;
  private static final int METADATA_NAME_FIELD = 0;
  private static final int METADATA_BUFFER = 1;
  private static final int BUFFER_DATA = 0;
  private static final int MODEL_METADATA_SUBGRAPHS = 3;
  private static final int SUBGRAPH_OUTPUTS = 3;
  private static final int TENSOR_NAME = 0;
  /** The model file is read whole: a classifier for a phone is far smaller. */
  private static final long MAX_MODEL_BYTES = 1L << 30;

  private ModelMetadata() {}

  public static OutputKind outputKind(File model) throws IOException {
    byte[] bytes;
    try (RandomAccessFile file = new RandomAccessFile(model, "r")) {
      if (file.length() > MAX_MODEL_BYTES) {
        return OutputKind.UNKNOWN;
      }
      bytes = new byte[(int) file.length()];
      file.readFully(bytes);
    }
    return outputKind(ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN));
  }

  static OutputKind outputKind(ByteBuffer model) {
    try {
      String name = outputName(model);
      if ("logits".equals(name)) {
        return OutputKind.LOGITS;
      }
      return "probability".equals(name) ? OutputKind.PROBABILITY : OutputKind.UNKNOWN;
    } catch (IndexOutOfBoundsException | IllegalArgumentException damaged) {
      return OutputKind.UNKNOWN;
    }
  }

  private static String outputName(ByteBuffer model) {
    int root = table(model, 0, model.getInt(0));
    int metadata = field(model, root, MODEL_METADATA);
    int buffers = field(model, root, MODEL_BUFFERS);
    if (metadata < 0 || buffers < 0) {
      return null;
    }
    for (int i = 0; i < vectorLength(model, metadata); i++) {
      int entry = vectorTable(model, metadata, i);
      int name = field(model, entry, METADATA_NAME_FIELD);
      if (name >= 0 && METADATA_NAME.equals(string(model, name))) {
        int bufferIndex = scalarField(model, entry, METADATA_BUFFER);
        int data = field(model, vectorTable(model, buffers, bufferIndex), BUFFER_DATA);
        if (data < 0) {
          return null;
        }
        int start = data + 4;
        ByteBuffer blob = slice(model, start, vectorLength(model, data));
        int metaRoot = table(blob, 0, blob.getInt(0));
        int subgraphs = field(blob, metaRoot, MODEL_METADATA_SUBGRAPHS);
        int outputs = subgraphs < 0 ? -1 : field(blob, vectorTable(blob, subgraphs, 0), SUBGRAPH_OUTPUTS);
        int tensorName = outputs < 0 ? -1 : field(blob, vectorTable(blob, outputs, 0), TENSOR_NAME);
        return tensorName < 0 ? null : string(blob, tensorName);
      }
    }
    return null;
  }

  private static ByteBuffer slice(ByteBuffer b, int start, int length) {
    check(b, start, length);
    ByteBuffer copy = b.duplicate();
    copy.position(start);
    copy.limit(start + length);
    return copy.slice().order(ByteOrder.LITTLE_ENDIAN);
  }

  private static void check(ByteBuffer b, int position, int length) {
    if (position < 0 || length < 0 || (long) position + length > b.limit()) {
      throw new IndexOutOfBoundsException("offset " + position + "+" + length + " outside " + b.limit());
    }
  }

  /** A table's position from a uoffset stored at {@code at}. */
  private static int table(ByteBuffer b, int at, int offset) {
    check(b, at, 4);
    int position = at + offset;
    check(b, position, 4);
    return position;
  }

  /** Position of the object a table's offset field points to, or -1 when the field is absent. */
  private static int field(ByteBuffer b, int table, int index) {
    int slot = slot(b, table, index);
    if (slot < 0) {
      return -1;
    }
    check(b, slot, 4);
    int target = slot + b.getInt(slot);
    check(b, target, 4);
    return target;
  }

  private static int scalarField(ByteBuffer b, int table, int index) {
    int slot = slot(b, table, index);
    if (slot < 0) {
      return 0;
    }
    check(b, slot, 4);
    return b.getInt(slot);
  }

  private static int slot(ByteBuffer b, int table, int index) {
    check(b, table, 4);
    int vtable = table - b.getInt(table);
    check(b, vtable, 4);
    int vtableSize = b.getShort(vtable) & 0xFFFF;
    int entry = 4 + 2 * index;
    if (entry + 2 > vtableSize) {
      return -1;
    }
    check(b, vtable + entry, 2);
    int offset = b.getShort(vtable + entry) & 0xFFFF;
    return offset == 0 ? -1 : table + offset;
  }

  private static int vectorLength(ByteBuffer b, int vector) {
    check(b, vector, 4);
    int length = b.getInt(vector);
    check(b, vector + 4, length < 0 ? -1 : 0);
    return length;
  }

  private static int vectorTable(ByteBuffer b, int vector, int index) {
    if (index < 0 || index >= vectorLength(b, vector)) {
      throw new IndexOutOfBoundsException("vector index " + index);
    }
    return table(b, vector + 4 + 4 * index, b.getInt(vector + 4 + 4 * index));
  }

  private static String string(ByteBuffer b, int position) {
    int length = vectorLength(b, position);
    check(b, position + 4, length);
    byte[] bytes = new byte[length];
    ByteBuffer copy = b.duplicate();
    copy.position(position + 4);
    copy.get(bytes);
    return new String(bytes, StandardCharsets.UTF_8);
  }
}
