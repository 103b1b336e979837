package org.kerasmixer.core;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.List;

/** Model output to ranked classes: dequantize, softmax when the model outputs logits, top-k. */
public final class Classifier {
  private Classifier() {}

  /** One ranked class. */
  public static final class Recognition {
    public final int index;
    public final String label;
    public final float score;

    public Recognition(int index, String label, float score) {
      this.index = index;
      this.label = label;
      this.score = score;
    }

    @Override
    public String toString() {
      return String.format("%s (%.1f%%)", label, 100f * score);
    }
  }

  /** Integer outputs to float, as (q - zeroPoint) * scale in float32. */
  public static float[] dequantize(byte[] raw, TensorSpec spec) {
    float[] out = new float[raw.length];
    for (int i = 0; i < raw.length; i++) {
      int q = spec.type == TensorSpec.DataType.UINT8 ? raw[i] & 0xFF : raw[i];
      out[i] = ((float) q - (float) spec.zeroPoint) * spec.scale;
    }
    return out;
  }

  /** Numerically stable softmax. */
  public static float[] softmax(float[] logits) {
    float max = Float.NEGATIVE_INFINITY;
    for (float v : logits) {
      max = Math.max(max, v);
    }
    double sum = 0;
    double[] e = new double[logits.length];
    for (int i = 0; i < logits.length; i++) {
      e[i] = Math.exp((double) logits[i] - max);
      sum += e[i];
    }
    float[] out = new float[logits.length];
    for (int i = 0; i < logits.length; i++) {
      out[i] = (float) (e[i] / sum);
    }
    return out;
  }

  /** The k best classes, highest score first; equal scores keep the lower class index first. */
  public static List<Recognition> topK(float[] scores, List<String> labels, int k) {
    Integer[] order = new Integer[scores.length];
    for (int i = 0; i < order.length; i++) {
      order[i] = i;
    }
    Arrays.sort(order, Comparator.comparingDouble((Integer i) -> -scores[i]).thenComparingInt(i -> i));
    List<Recognition> best = new ArrayList<>();
    for (int r = 0; r < Math.min(k, scores.length); r++) {
      int index = order[r];
      String label = labels != null && index < labels.size() ? labels.get(index) : Integer.toString(index);
      best.add(new Recognition(index, label, scores[index]));
    }
    return best;
  }

  /**
   * Ranked classes for a raw output tensor: {@code applySoftmax} for models that output logits (keras_mixer's
   * exports with {@code classifier_activation=None}); probabilities are used as they are otherwise.
   */
  public static List<Recognition> classify(
      byte[] raw, TensorSpec output, List<String> labels, int k, boolean applySoftmax) {
    return classify(dequantize(raw, output), labels, k, applySoftmax);
  }

  /** Ranked classes for a float output tensor (float models, or integer outputs already dequantized). */
  public static List<Recognition> classify(float[] scores, List<String> labels, int k, boolean applySoftmax) {
    return topK(applySoftmax ? softmax(scores) : scores, labels, k);
  }
}
