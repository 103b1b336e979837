package org.kerasmixer.core;

/**
 * Camera frame to model input, operation for operation as keras_mixer.preprocessing.preprocess_frame: the
 * largest centred square, bilinear resize with half-pixel centres (as tf.image.resize), pixels mapped to [-1, 1]
 * as x / 127.5 - 1, then quantized with the input's scale and zero point (rounding half away from zero, as
 * TFLite does). All arithmetic is float32 in the same order as the Python reference, so both give the same bits.
 */
public final class FramePreprocessor {
  private FramePreprocessor() {}

  /** RGB values (0..255, float) of the centre square of an ARGB frame, resized to size x size, row-major HWC. */
  public static float[] centerCropResize(int[] argb, int width, int height, int size) {
    if (argb.length != width * height) {
      throw new IllegalArgumentException(
          "frame has " + argb.length + " pixels, expected " + width + "x" + height);
    }
    int side = Math.min(width, height);
    Axis ys = new Axis(size, side, (height - side) / 2);
    Axis xs = new Axis(size, side, (width - side) / 2);
    float[] out = new float[size * size * 3];
    for (int oy = 0; oy < size; oy++) {
      float wy = ys.weight[oy];
      for (int ox = 0; ox < size; ox++) {
        float wx = xs.weight[ox];
        int p00 = argb[ys.low[oy] * width + xs.low[ox]];
        int p01 = argb[ys.low[oy] * width + xs.high[ox]];
        int p10 = argb[ys.high[oy] * width + xs.low[ox]];
        int p11 = argb[ys.high[oy] * width + xs.high[ox]];
        for (int c = 0; c < 3; c++) {
          int shift = 16 - 8 * c; // R, G, B
          float top = channel(p00, shift) * (1f - wx) + channel(p01, shift) * wx;
          float bottom = channel(p10, shift) * (1f - wx) + channel(p11, shift) * wx;
          out[(oy * size + ox) * 3 + c] = top * (1f - wy) + bottom * wy;
        }
      }
    }
    return out;
  }

  /** Pixel values 0..255 to the Mixer input range [-1, 1] (keras_mixer.preprocess_input), in place. */
  public static float[] normalize(float[] pixels) {
    for (int i = 0; i < pixels.length; i++) {
      pixels[i] = pixels[i] / 127.5f - 1.0f;
    }
    return pixels;
  }

  /** Float values to the integer tensor type of {@code spec}; the bytes are what the interpreter expects. */
  public static byte[] quantize(float[] values, TensorSpec spec) {
    byte[] out = new byte[values.length];
    for (int i = 0; i < values.length; i++) {
      float q = roundHalfAwayFromZero(values[i] / spec.scale) + (float) spec.zeroPoint;
      q = Math.max((float) spec.min(), Math.min((float) spec.max(), q));
      out[i] = (byte) (int) q; // uint8 values 128..255 wrap to negative bytes, as Java stores them
    }
    return out;
  }

  /** The model input for a frame: float values for float models, quantized bytes otherwise. */
  public static Object preprocess(int[] argb, int width, int height, int size, TensorSpec input) {
    float[] values = normalize(centerCropResize(argb, width, height, size));
    return input.type == TensorSpec.DataType.FLOAT32 ? values : quantize(values, input);
  }

  static float roundHalfAwayFromZero(float x) {
    return Math.copySign((float) Math.floor(Math.abs(x) + 0.5f), x);
  }

  private static float channel(int argb, int shift) {
    return (float) ((argb >> shift) & 0xFF);
  }

  /** Sampling positions along one axis: source index below, above, and the weight of the one above. */
  private static final class Axis {
    final int[] low;
    final int[] high;
    final float[] weight;

    Axis(int outSize, int inSize, int offset) {
      low = new int[outSize];
      high = new int[outSize];
      weight = new float[outSize];
      float ratio = (float) inSize / (float) outSize;
      for (int i = 0; i < outSize; i++) {
        float position = Math.max(((float) i + 0.5f) * ratio - 0.5f, 0f);
        int below = Math.min((int) Math.floor(position), inSize - 1);
        low[i] = below + offset;
        high[i] = Math.min(below + 1, inSize - 1) + offset;
        weight[i] = position - (float) below;
      }
    }
  }
}
