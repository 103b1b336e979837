package org.kerasmixer.demo

import android.content.Context
import android.os.SystemClock
import org.kerasmixer.core.Classifier
import org.kerasmixer.core.Cleanup
import org.kerasmixer.core.FramePreprocessor
import org.kerasmixer.core.Labels
import org.kerasmixer.core.ModelFiles
import org.kerasmixer.core.ModelMetadata
import org.kerasmixer.core.TensorSpec
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import org.tensorflow.lite.gpu.CompatibilityList
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
 * input size, element type and quantization from the interpreter's tensors, class names and whether the output is
 * logits or probabilities from the metadata the export embeds. Pre- and post-processing are the host-tested
 * `org.kerasmixer.core` classes. A failed load (a delegate this device lacks, a bad model) closes everything it
 * had created before the exception leaves the constructor.
 */
class MixerClassifier(
    context: Context,
    accelerator: Accelerator,
    assetName: String = "model.tflite",
    threads: Int = 2,
) : Closeable {

    enum class Accelerator { CPU, GPU, NNAPI }

    data class Result(val top: List<Classifier.Recognition>, val inferenceMs: Long, val totalMs: Long)

    private val interpreter: Interpreter
    private val delegate: Delegate?

    val inputSize: Int
    private val inputSpec: TensorSpec
    private val outputSpec: TensorSpec
    private val labels: List<String>?
    private val applySoftmax: Boolean
    private val inputBuffer: ByteBuffer
    private val outputBuffer: ByteBuffer
    private val classes: Int

    init {
        val modelFile = modelCopy(context, assetName)
        val cleanup = Cleanup()
        try {
            delegate = when (accelerator) {
                Accelerator.GPU -> cleanup.add(gpuDelegate())
                Accelerator.NNAPI -> cleanup.add(NnApiDelegate())
                Accelerator.CPU -> null
            }
            val options = Interpreter.Options().setNumThreads(threads).setUseXNNPACK(true)
            delegate?.let(options::addDelegate)
            interpreter = cleanup.add(Interpreter(mapModel(modelFile), options))

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
            labels = ModelFiles.labels(modelFile)?.let { Labels.checkedFor(it, classes) }
            // keras_mixer names its output "logits" or "probability"; other models: softmax unless it already is one
            applySoftmax = ModelMetadata.outputKind(modelFile) != ModelMetadata.OutputKind.PROBABILITY
            inputBuffer = ByteBuffer.allocateDirect(input.numBytes()).order(ByteOrder.nativeOrder())
            outputBuffer = ByteBuffer.allocateDirect(output.numBytes()).order(ByteOrder.nativeOrder())
            cleanup.keep()
        } catch (failure: Throwable) { // delegate loading throws Errors too (UnsatisfiedLinkError, ...)
            runCatching { cleanup.close() }.exceptionOrNull()?.let(failure::addSuppressed)
            throw failure
        }
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
        val top = Classifier.classify(scores, labels, k, applySoftmax)
        return Result(top, inferenceMs, SystemClock.uptimeMillis() - start)
    }

    override fun close() {
        interpreter.close()
        (delegate as? AutoCloseable)?.close()
    }

    private companion object {
        /**
         * The asset copied to a file once per installed app version (its name carries the install time), written to
         * a temporary file and renamed: an interpreter of an earlier activity may still memory-map the copy, so
         * it is never truncated or rewritten in place. Copies from earlier installs are removed.
         */
        fun modelCopy(context: Context, name: String): File {
            val installed = context.packageManager.getPackageInfo(context.packageName, 0).lastUpdateTime
            val suffix = "-$name"
            val target = File(context.noBackupFilesDir, "$installed$suffix")
            context.noBackupFilesDir.listFiles { file -> file.name.endsWith(suffix) && file != target }
                ?.forEach { it.delete() }
            return ModelFiles.copyOnce({ context.assets.open(name) }, target)
        }

        /** The GPU delegate with the device's best options, only where the compatibility list supports it. */
        fun gpuDelegate(): GpuDelegate = CompatibilityList().use { compatibility ->
            if (!compatibility.isDelegateSupportedOnThisDevice) {
                throw UnsupportedOperationException("the GPU delegate does not support this device")
            }
            GpuDelegate(compatibility.bestOptionsForThisDevice)
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
    }
}
