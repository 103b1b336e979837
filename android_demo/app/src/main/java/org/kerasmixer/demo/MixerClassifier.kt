package org.kerasmixer.demo

import android.content.Context
import android.os.SystemClock
import org.kerasmixer.core.Classifier
import org.kerasmixer.core.FramePreprocessor
import org.kerasmixer.core.ModelFiles
import org.kerasmixer.core.TensorSpec
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate
import java.io.Closeable
import java.io.File
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.channels.FileChannel

/**
 * Runs a keras_mixer `.tflite` export on camera frames. Everything model-specific is read from the model itself:
 * input size, element type and quantization from the interpreter's tensors, class names from the labels file the
 * export packs into the metadata. Pre- and post-processing are the host-tested `org.kerasmixer.core` classes.
 */
class MixerClassifier(
    context: Context,
    accelerator: Accelerator,
    assetName: String = "model.tflite",
    threads: Int = 2,
) : Closeable {

    enum class Accelerator { CPU, GPU, NNAPI }

    data class Result(val top: List<Classifier.Recognition>, val inferenceMs: Long, val totalMs: Long)

    private val modelFile: File = copyAsset(context, assetName)
    private val gpu: GpuDelegate? = if (accelerator == Accelerator.GPU) GpuDelegate() else null
    private val nnApi: NnApiDelegate? = if (accelerator == Accelerator.NNAPI) NnApiDelegate() else null
    private val interpreter: Interpreter

    val inputSize: Int
    private val inputSpec: TensorSpec
    private val outputSpec: TensorSpec
    private val labels: List<String>?
    private val inputBuffer: ByteBuffer
    private val outputBuffer: ByteBuffer
    private val classes: Int

    init {
        val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true)
        gpu?.let(options::addDelegate)
        nnApi?.let(options::addDelegate)
        interpreter = Interpreter(mapModel(modelFile), options)

        val input = interpreter.getInputTensor(0)
        val shape = input.shape() // [1, height, width, 3]
        require(shape.size == 4 && shape[0] == 1 && shape[1] == shape[2] && shape[3] == 3) {
            "expected a [1, size, size, 3] image input, got ${shape.contentToString()}"
        }
        inputSize = shape[1]
        inputSpec = specOf(input)
        val output = interpreter.getOutputTensor(0)
        outputSpec = specOf(output)
        classes = output.shape().last()
        labels = ModelFiles.labels(modelFile)?.let { org.kerasmixer.core.Labels.checkedFor(it, classes) }
        inputBuffer = ByteBuffer.allocateDirect(input.numBytes()).order(ByteOrder.nativeOrder())
        outputBuffer = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())
    }

    /** Classifies one ARGB frame (as `Bitmap.getPixels` returns it), upright. */
    fun classify(argb: IntArray, width: Int, height: Int, k: Int = 3): Result {
        val start = SystemClock.uptimeMillis()
        inputBuffer.rewind()
        when (val tensor = FramePreprocessor.preprocess(argb, width, height, inputSize, inputSpec)) {
            is ByteArray -> inputBuffer.put(tensor)
            is FloatArray -> inputBuffer.asFloatBuffer().put(tensor)
        }
        inputBuffer.rewind()
        outputBuffer.rewind()
        val inferenceStart = SystemClock.uptimeMillis()
        interpreter.run(inputBuffer, outputBuffer)
        val inferenceMs = SystemClock.uptimeMillis() - inferenceStart
        outputBuffer.rewind()
        val scores = if (outputSpec.type == TensorSpec.DataType.FLOAT32) {
            FloatArray(classes).also { outputBuffer.asFloatBuffer().get(it) }
        } else {
            Classifier.dequantize(ByteArray(classes).also { outputBuffer.get(it) }, outputSpec)
        }
        // keras_mixer exports logits (classifier_activation=None); a softmax head already gives probabilities
        val top = Classifier.classify(scores, labels, k, !looksLikeProbabilities(scores))
        return Result(top, inferenceMs, SystemClock.uptimeMillis() - start)
    }

    override fun close() {
        interpreter.close()
        gpu?.close()
        nnApi?.close()
    }

    private companion object {
        fun copyAsset(context: Context, name: String): File {
            // a real file, so the interpreter can memory-map it and ZipFile can read the packed labels
            val file = File(context.cacheDir, name)
            context.assets.open(name).use { input -> file.outputStream().use { input.copyTo(it) } }
            return file
        }

        fun mapModel(file: File): ByteBuffer = FileInputStream(file).use {
            it.channel.map(FileChannel.MapMode.READ_ONLY, 0, file.length())
        }

        fun specOf(tensor: Tensor): TensorSpec {
            val q = tensor.quantizationParams()
            return when (tensor.dataType()) {
                DataType.FLOAT32 -> TensorSpec.float32()
                DataType.INT8 -> TensorSpec(TensorSpec.DataType.INT8, q.scale, q.zeroPoint)
                DataType.UINT8 -> TensorSpec(TensorSpec.DataType.UINT8, q.scale, q.zeroPoint)
                else -> throw IllegalArgumentException("unsupported tensor type ${tensor.dataType()}")
            }
        }

        fun looksLikeProbabilities(scores: FloatArray): Boolean =
            scores.all { it in 0f..1f } && kotlin.math.abs(scores.sum() - 1f) < 0.02f
    }
}
