package org.kerasmixer.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The labels reader on real keras_mixer exports (written by tests/test_android_core.py) and on damaged copies of
 * them; the model copy that never rewrites a file in place; closing what a failed load created.
 */
class ModelFilesTest {
  private static final List<String> DIGITS =
      List.of("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine");

  private static Path golden(String name) {
    String dir = System.getProperty("golden.dir");
    if (dir == null) {
      throw new IllegalStateException("run with -Dgolden.dir=<folder written by tests/test_android_core.py>");
    }
    return Paths.get(dir, name);
  }

  @Test
  void labelsOfEveryRealExport() throws IOException {
    for (String model : new String[] {"int8.tflite", "float32.tflite", "int8_deflated_labels.tflite"}) {
      assertEquals(DIGITS, ModelFiles.labels(golden(model).toFile()), model);
    }
    for (String model : new String[] {"uint8.tflite", "int8_no_labels.tflite"}) {
      assertNull(ModelFiles.labels(golden(model).toFile()), model);
    }
  }

  /** Writes a copy of the int8 export changed by {@code damage} and reads its labels. */
  private static List<String> labelsAfter(Path dir, java.util.function.Consumer<ByteBuffer> damage)
      throws IOException {
    byte[] bytes = Files.readAllBytes(golden("int8.tflite"));
    ByteBuffer buffer = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
    damage.accept(buffer);
    Path copy = Files.createTempFile(dir, "damaged", ".tflite");
    Files.write(copy, buffer.array());
    return ModelFiles.labels(copy.toFile());
  }

  private static int endRecord(ByteBuffer b) {
    for (int i = b.limit() - 22; i >= 0; i--) {
      if (b.getInt(i) == 0x06054b50) {
        return i;
      }
    }
    throw new AssertionError("no end record");
  }

  private static int centralEntry(ByteBuffer b) {
    int end = endRecord(b);
    return end - b.getInt(end + 12); // one entry: the directory ends where the end record starts
  }

  @Test
  void damagedArchivesGiveNoLabelsNeverAnException(@TempDir Path dir) throws IOException {
    assertEquals(DIGITS, labelsAfter(dir, b -> {})); // the undamaged copy
    List<java.util.function.Consumer<ByteBuffer>> damages = new ArrayList<>();
    damages.add(b -> b.putInt(endRecord(b), 0)); // no end record
    damages.add(b -> b.putInt(endRecord(b) + 16, b.getInt(endRecord(b) + 16) + 1000)); // directory offset
    damages.add(b -> b.putInt(endRecord(b) + 12, 0x7FFFFFF0)); // directory size
    damages.add(b -> b.putShort(endRecord(b) + 10, (short) 0)); // an empty directory
    damages.add(b -> b.putInt(centralEntry(b) + 42, 0x7FFFFFF0)); // local header offset
    damages.add(b -> b.putInt(centralEntry(b) + 20, 0x7FFFFFF0)); // compressed size
    damages.add(b -> b.putInt(centralEntry(b) + 24, 0x7FFFFFF0)); // uncompressed size
    damages.add(b -> b.putShort(centralEntry(b) + 10, (short) 12)); // compression method (bzip2)
    damages.add(b -> b.putShort(centralEntry(b) + 28, (short) 0x7FFF)); // file name length
    damages.add(b -> b.putInt(b.getInt(centralEntry(b) + 42) + endRecord(b) - b.getInt(endRecord(b) + 12)
        - b.getInt(endRecord(b) + 16), 0)); // local header signature
    for (int i = 0; i < damages.size(); i++) {
      assertNull(labelsAfter(dir, damages.get(i)), "damage " + i);
    }
    byte[] whole = Files.readAllBytes(golden("int8.tflite"));
    for (int cut : new int[] {1, 10, 22, 100, whole.length / 2, whole.length}) {
      Path truncated = Files.write(dir.resolve("truncated" + cut), java.util.Arrays.copyOf(whole, whole.length - cut));
      assertNull(ModelFiles.labels(truncated.toFile()), "truncated by " + cut);
    }
  }

  @Test
  void outputKindFromTheMetadataNotGuessed() throws IOException {
    assertEquals(ModelMetadata.OutputKind.LOGITS, ModelMetadata.outputKind(golden("int8.tflite").toFile()));
    assertEquals(ModelMetadata.OutputKind.LOGITS, ModelMetadata.outputKind(golden("uint8.tflite").toFile()));
    assertEquals(ModelMetadata.OutputKind.PROBABILITY,
        ModelMetadata.outputKind(golden("softmax_float32.tflite").toFile()));
    assertEquals(ModelMetadata.OutputKind.UNKNOWN, ModelMetadata.outputKind(golden("no_metadata.tflite").toFile()));
    byte[] whole = Files.readAllBytes(golden("int8.tflite"));
    java.util.Random random = new java.util.Random(0);
    for (int trial = 0; trial < 300; trial++) { // truncated and bit-flipped copies: an answer, never an exception
      byte[] damaged = java.util.Arrays.copyOf(whole, trial % 3 == 0 ? random.nextInt(whole.length) : whole.length);
      for (int flip = 0; flip < 4 && damaged.length > 0; flip++) {
        damaged[random.nextInt(damaged.length)] ^= (byte) (1 << random.nextInt(8));
      }
      ModelMetadata.outputKind(ByteBuffer.wrap(damaged).order(ByteOrder.LITTLE_ENDIAN));
    }
  }

  @Test
  void modelCopiedOnceAndNeverRewrittenInPlace(@TempDir Path dir) throws IOException {
    File target = dir.resolve("model-1.tflite").toFile();
    byte[] model = Files.readAllBytes(golden("int8.tflite"));
    ModelFiles.copyOnce(() -> new ByteArrayInputStream(model), target);
    assertArrayEquals(model, Files.readAllBytes(target.toPath()));
    Object inode = Files.getAttribute(target.toPath(), "unix:ino");
    ModelFiles.copyOnce(() -> {
      throw new AssertionError("an existing copy must not be opened again");
    }, target);
    assertEquals(inode, Files.getAttribute(target.toPath(), "unix:ino"));
    File failed = dir.resolve("model-2.tflite").toFile();
    assertThrows(IOException.class, () -> ModelFiles.copyOnce(() -> new java.io.InputStream() {
      @Override
      public int read() throws IOException {
        throw new IOException("asset read failed");
      }
    }, failed));
    assertFalse(failed.exists());
    try (var files = Files.list(dir)) {
      assertEquals(1, files.count(), "no partial file left behind");
    }
  }

  @Test
  void cleanupClosesWhatAFailedLoadCreatedNewestFirst() {
    List<String> closed = new ArrayList<>();
    RuntimeException failure = assertThrows(RuntimeException.class, () -> {
      try (Cleanup cleanup = new Cleanup()) {
        cleanup.add(() -> closed.add("gpu delegate"));
        cleanup.add(() -> {
          closed.add("nnapi delegate");
          throw new IllegalStateException("close failed");
        });
        cleanup.add(() -> closed.add("interpreter"));
        throw new RuntimeException("load failed"); // e.g. the output check after the interpreter was made
      }
    });
    assertEquals("load failed", failure.getMessage());
    assertEquals(List.of("interpreter", "nnapi delegate", "gpu delegate"), closed);
    assertEquals(1, failure.getSuppressed().length);

    List<String> kept = new ArrayList<>();
    try (Cleanup cleanup = new Cleanup()) {
      cleanup.add(() -> kept.add("closed"));
      cleanup.keep();
    }
    assertTrue(kept.isEmpty());
  }
}
