package org.kerasmixer.core;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.util.List;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

/** Files packed into a .tflite by its metadata (keras_mixer.export.to_tflite(..., labels=...)). */
public final class ModelFiles {
  public static final String LABELS = "labels.txt";

  private ModelFiles() {}

  /**
   * The class names packed in the model, or null when it has none. The metadata appends a zip archive after
   * the flatbuffer; ZipFile finds it through the central directory at the end of the file.
   */
  public static List<String> labels(File model) throws IOException {
    try (ZipFile zip = new ZipFile(model)) {
      ZipEntry entry = zip.getEntry(LABELS);
      if (entry == null) {
        return null;
      }
      try (InputStream in = zip.getInputStream(entry)) {
        return Labels.parse(in);
      }
    } catch (java.util.zip.ZipException noArchive) {
      return null; // a model exported without labels has no archive at all
    }
  }
}
