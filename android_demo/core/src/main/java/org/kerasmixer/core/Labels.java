package org.kerasmixer.core;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** The labels file packed in a model's metadata (labels.txt): one class name per line, in class order. */
public final class Labels {
  private Labels() {}

  public static List<String> parse(InputStream in) throws IOException {
    List<String> labels = new ArrayList<>();
    try (BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
      String line;
      while ((line = reader.readLine()) != null) { // handles \n and \r\n
        labels.add(line.trim());
      }
    }
    while (!labels.isEmpty() && labels.get(labels.size() - 1).isEmpty()) {
      labels.remove(labels.size() - 1); // a trailing newline is not a class
    }
    return labels;
  }

  /** Checks the labels fit the model's output, so a wrong file is caught at load time, not shown as wrong names. */
  public static List<String> checkedFor(List<String> labels, int classes) {
    if (labels.size() != classes) {
      throw new IllegalArgumentException(labels.size() + " labels for a model with " + classes + " classes");
    }
    return labels;
  }
}
