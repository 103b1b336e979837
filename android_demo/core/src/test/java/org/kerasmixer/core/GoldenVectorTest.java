package org.kerasmixer.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Reproduces, bit for bit, golden vectors written by keras_mixer (tests/test_android_core.py): a camera frame to
 * the model input tensor, and a real int8 model output to the ranked classes.
 */
class GoldenVectorTest {
  private static Path goldenDir() {
    String dir = System.getProperty("golden.dir");
    if (dir == null) {
      throw new IllegalStateException("run with -Dgolden.dir=<folder written by tests/test_android_core.py>");
    }
    return Paths.get(dir);
  }

  /** "key v1 v2 ..." lines; float values are written as their IEEE-754 bits. */
  private static Map<String, String[]> read(Path file) throws IOException {
    Map<String, String[]> fields = new HashMap<>();
    for (String line : Files.readAllLines(file)) {
      String[] parts = line.trim().split(" ");
      String[] values = new String[parts.length - 1];
      System.arraycopy(parts, 1, values, 0, values.length);
      fields.put(parts[0], values);
    }
    return fields;
  }

  private static int[] ints(String[] values) {
    int[] out = new int[values.length];
    for (int i = 0; i < values.length; i++) {
      out[i] = Integer.parseInt(values[i]);
    }
    return out;
  }

  private static float bitsToFloat(String value) {
    return Float.intBitsToFloat(Integer.parseInt(value));
  }

  private static TensorSpec spec(Map<String, String[]> f, String prefix) {
    TensorSpec.DataType type = TensorSpec.DataType.valueOf(f.get(prefix + "_dtype")[0].toUpperCase());
    if (type == TensorSpec.DataType.FLOAT32) {
      return TensorSpec.float32();
    }
    return new TensorSpec(type, bitsToFloat(f.get(prefix + "_scale")[0]), Integer.parseInt(f.get(prefix + "_zero_point")[0]));
  }

  private static List<Path> cases() throws IOException {
    List<Path> files = new ArrayList<>();
    try (DirectoryStream<Path> stream = Files.newDirectoryStream(goldenDir(), "case_*.txt")) {
      stream.forEach(files::add);
    }
    assertFalse(files.isEmpty(), "no golden vectors in " + goldenDir());
    return files;
  }

  @Test
  void preprocessingMatchesPythonBitForBit() throws IOException {
    for (Path file : cases()) {
      Map<String, String[]> f = read(file);
      int[] argb = ints(f.get("argb"));
      int width = Integer.parseInt(f.get("width")[0]);
      int height = Integer.parseInt(f.get("height")[0]);
      int size = Integer.parseInt(f.get("size")[0]);
      TensorSpec input = spec(f, "input");
      Object tensor = FramePreprocessor.preprocess(argb, width, height, size, input);
      int[] expected = ints(f.get("expected_input"));
      if (input.type == TensorSpec.DataType.FLOAT32) {
        float[] values = (float[]) tensor;
        int[] bits = new int[values.length];
        for (int i = 0; i < values.length; i++) {
          bits[i] = Float.floatToRawIntBits(values[i]);
        }
        assertArrayEquals(expected, bits, file + ": float input differs");
      } else {
        byte[] bytes = (byte[]) tensor;
        int[] values = new int[bytes.length];
        for (int i = 0; i < bytes.length; i++) {
          values[i] = input.type == TensorSpec.DataType.UINT8 ? bytes[i] & 0xFF : bytes[i];
        }
        assertArrayEquals(expected, values, file + ": quantized input differs");
      }
    }
  }

  @Test
  void outputRankingMatchesPython() throws IOException {
    for (Path file : cases()) {
      Map<String, String[]> f = read(file);
      TensorSpec output = spec(f, "output");
      int[] values = ints(f.get("output"));
      float[] logits = new float[values.length];
      for (int i = 0; i < values.length; i++) {
        logits[i] = output.type == TensorSpec.DataType.FLOAT32 ? Float.intBitsToFloat(values[i]) : 0f;
      }
      if (output.type != TensorSpec.DataType.FLOAT32) {
        byte[] raw = new byte[values.length];
        for (int i = 0; i < values.length; i++) {
          raw[i] = (byte) values[i];
        }
        logits = Classifier.dequantize(raw, output);
      }
      int[] expectedTop = ints(f.get("expected_top"));
      List<Classifier.Recognition> top = Classifier.classify(logits, null, expectedTop.length, true);
      for (int r = 0; r < expectedTop.length; r++) {
        assertEquals(expectedTop[r], top.get(r).index, file + ": rank " + r);
        assertEquals(bitsToFloat(f.get("expected_scores")[r]), top.get(r).score, 1e-6f, file + ": score " + r);
      }
      String[] expectedLogits = f.get("expected_logits");
      for (int i = 0; i < logits.length; i++) {
        assertEquals(Integer.parseInt(expectedLogits[i]), Float.floatToRawIntBits(logits[i]), file + ": logit " + i);
      }
    }
  }

  @Test
  void labelsFileFromModelMetadata() throws IOException {
    try (InputStream in = new FileInputStream(goldenDir().resolve("labels.txt").toFile())) {
      List<String> labels = Labels.parse(in);
      assertEquals(List.of("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"), labels);
      assertEquals(labels, Labels.checkedFor(labels, 10));
      assertThrows(IllegalArgumentException.class, () -> Labels.checkedFor(labels, 1000));
    }
  }

  @Test
  void labelsPackedInTheModelMetadata() throws IOException {
    assertEquals(
        List.of("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
        ModelFiles.labels(goldenDir().resolve("int8.tflite").toFile()));
    assertEquals(null, ModelFiles.labels(goldenDir().resolve("uint8.tflite").toFile()));
  }

  @Test
  void badInputIsRejected() {
    assertThrows(IllegalArgumentException.class, () -> FramePreprocessor.centerCropResize(new int[5], 2, 2, 4));
    assertThrows(IllegalArgumentException.class, () -> new TensorSpec(TensorSpec.DataType.INT8, 0f, 0));
  }
}
