package org.kerasmixer.core;

import java.io.ByteArrayInputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.FileOutputStream;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.zip.DataFormatException;
import java.util.zip.Inflater;

/**
 * Files packed into a .tflite by its metadata (keras_mixer.export.to_tflite(..., labels=...)), and the model file
 * itself on the device.
 *
 * <p>The metadata's zip archive is appended after the flatbuffer, so the file does not start with a zip
 * signature; Android's {@code java.util.zip.ZipFile} rejects such files ("invalid LFH signature"). As Google's
 * own metadata library does, the archive is found from its end-of-central-directory record at the end of the file
 * and read through its central directory, with every offset and size checked against the file.
 */
public final class ModelFiles {
  public static final String LABELS = "labels.txt";

  private static final int END_OF_CENTRAL_DIRECTORY = 0x06054b50;
  private static final int CENTRAL_DIRECTORY_ENTRY = 0x02014b50;
  private static final int LOCAL_FILE_HEADER = 0x04034b50;
  private static final int END_RECORD_SIZE = 22;
  private static final int MAX_COMMENT = 0xFFFF;
  private static final int STORED = 0;
  private static final int DEFLATED = 8;
  /** Larger than any label file (ImageNet-21k's names are ~0.5 MB): a bigger size is damage, not labels. */
  static final int MAX_ENTRY_BYTES = 16 << 20;

  private ModelFiles() {}

  /**
   * The class names packed in the model, or null when it has none, or when its archive is missing, damaged or
   * not one we can read (a model without labels, a truncated download): a model without labels still runs.
   */
  public static List<String> labels(File model) throws IOException {
    byte[] entry = readEntry(model, LABELS);
    return entry == null ? null : Labels.parse(new ByteArrayInputStream(entry));
  }

  /** The bytes of the archive member {@code name}, or null when absent or unreadable. */
  static byte[] readEntry(File model, String name) throws IOException {
    try (RandomAccessFile file = new RandomAccessFile(model, "r")) {
      long length = file.length();
      int tailLength = (int) Math.min(length, END_RECORD_SIZE + MAX_COMMENT);
      ByteBuffer tail = read(file, length - tailLength, tailLength);
      int end = findEndRecord(tail);
      if (end < 0) {
        return null;
      }
      long endPosition = length - tailLength + end;
      int entries = tail.getShort(end + 10) & 0xFFFF;
      long directorySize = tail.getInt(end + 12) & 0xFFFFFFFFL;
      long directoryOffset = tail.getInt(end + 16) & 0xFFFFFFFFL;
      // offsets are relative to the archive's start: the flatbuffer before it shifts them (as Python's zipfile
      // computes it, "concat")
      long shift = endPosition - directorySize - directoryOffset;
      if (shift < 0 || directorySize > endPosition || directorySize > MAX_ENTRY_BYTES) {
        return null;
      }
      ByteBuffer directory = read(file, directoryOffset + shift, (int) directorySize);
      int position = 0;
      for (int i = 0; i < entries; i++) {
        if (position + 46 > directory.limit() || directory.getInt(position) != CENTRAL_DIRECTORY_ENTRY) {
          return null;
        }
        int method = directory.getShort(position + 10) & 0xFFFF;
        long compressed = directory.getInt(position + 20) & 0xFFFFFFFFL;
        long size = directory.getInt(position + 24) & 0xFFFFFFFFL;
        int nameLength = directory.getShort(position + 28) & 0xFFFF;
        int extraLength = directory.getShort(position + 30) & 0xFFFF;
        int commentLength = directory.getShort(position + 32) & 0xFFFF;
        long localOffset = (directory.getInt(position + 42) & 0xFFFFFFFFL) + shift;
        if (position + 46 + nameLength > directory.limit()) {
          return null;
        }
        byte[] entryName = new byte[nameLength];
        directory.position(position + 46);
        directory.get(entryName);
        if (name.equals(new String(entryName, StandardCharsets.UTF_8))) {
          return readData(file, localOffset, method, compressed, size, endPosition);
        }
        position += 46 + nameLength + extraLength + commentLength;
      }
      return null;
    }
  }

  private static byte[] readData(RandomAccessFile file, long header, int method, long compressed, long size,
      long archiveEnd) throws IOException {
    if (compressed > MAX_ENTRY_BYTES || size > MAX_ENTRY_BYTES || header < 0 || header + 30 > archiveEnd) {
      return null;
    }
    ByteBuffer local = read(file, header, 30);
    if (local.getInt(0) != LOCAL_FILE_HEADER) {
      return null;
    }
    long start = header + 30 + (local.getShort(26) & 0xFFFF) + (local.getShort(28) & 0xFFFF);
    if (start + compressed > archiveEnd) {
      return null;
    }
    byte[] data = new byte[(int) compressed];
    file.seek(start);
    file.readFully(data);
    if (method == STORED) {
      return compressed == size ? data : null;
    }
    if (method != DEFLATED) {
      return null;
    }
    Inflater inflater = new Inflater(true); // raw deflate, as zip stores it
    try {
      inflater.setInput(data);
      byte[] out = new byte[(int) size];
      int filled = 0;
      while (filled < out.length && !inflater.finished()) {
        int n = inflater.inflate(out, filled, out.length - filled);
        if (n == 0 && (inflater.needsInput() || inflater.needsDictionary())) {
          return null;
        }
        filled += n;
      }
      return filled == out.length ? out : null;
    } catch (DataFormatException damaged) {
      return null;
    } finally {
      inflater.end();
    }
  }

  /** Position of the end-of-central-directory record in {@code tail}, searching back from its end; -1 if none. */
  private static int findEndRecord(ByteBuffer tail) {
    for (int i = tail.limit() - END_RECORD_SIZE; i >= 0; i--) {
      if (tail.getInt(i) == END_OF_CENTRAL_DIRECTORY && i + END_RECORD_SIZE + (tail.getShort(i + 20) & 0xFFFF)
          == tail.limit()) {
        return i;
      }
    }
    return -1;
  }

  private static ByteBuffer read(RandomAccessFile file, long offset, int length) throws IOException {
    if (offset < 0 || length < 0 || offset + length > file.length()) {
      throw new IOException("read past the end of the file");
    }
    byte[] bytes = new byte[length];
    file.seek(offset);
    file.readFully(bytes);
    return ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
  }

  /** Opens the model's bytes (on Android: the APK asset). */
  public interface Source {
    InputStream open() throws IOException;
  }

  /**
   * The model at {@code target}, copied from {@code source} only if it is not there yet: the name should carry
   * the app version, so a new APK gets a new file. A new copy is written to a temporary file and renamed, so a
   * file an interpreter has memory-mapped is never truncated or rewritten under it (that would be SIGBUS).
   */
  public static File copyOnce(Source source, File target) throws IOException {
    if (target.isFile()) {
      return target;
    }
    File parent = target.getAbsoluteFile().getParentFile();
    File temporary = File.createTempFile(target.getName(), ".partial", parent);
    try {
      // java.io only: java.nio.file and InputStream.transferTo need newer Android versions than minSdk 24
      try (InputStream in = source.open(); FileOutputStream out = new FileOutputStream(temporary)) {
        byte[] buffer = new byte[1 << 16];
        for (int n; (n = in.read(buffer)) > 0; ) {
          out.write(buffer, 0, n);
        }
        out.getFD().sync();
      }
      if (!temporary.renameTo(target)) { // rename(2): atomic within the folder
        throw new IOException("could not rename " + temporary + " to " + target);
      }
    } finally {
      if (temporary.exists() && !temporary.delete()) {
        temporary.deleteOnExit();
      }
    }
    return target;
  }
}
