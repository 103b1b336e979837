package org.kerasmixer.core;

/** Type and quantization of a model tensor, as the interpreter reports them (scale 0 means not quantized). */
public final class TensorSpec {
  /** Element type of a model input or output. */
  public enum DataType {
    FLOAT32,
    INT8,
    UINT8
  }

  public final DataType type;
  public final float scale;
  public final int zeroPoint;

  public TensorSpec(DataType type, float scale, int zeroPoint) {
    if (type != DataType.FLOAT32 && !(scale > 0f)) {
      throw new IllegalArgumentException("an integer tensor needs a positive scale, got " + scale);
    }
    this.type = type;
    this.scale = scale;
    this.zeroPoint = zeroPoint;
  }

  public static TensorSpec float32() {
    return new TensorSpec(DataType.FLOAT32, 0f, 0);
  }

  int min() {
    return type == DataType.UINT8 ? 0 : -128;
  }

  int max() {
    return type == DataType.UINT8 ? 255 : 127;
  }
}
