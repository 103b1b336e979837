package org.kerasmixer.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.graphics.Matrix
import android.graphics.Rect
import android.os.Bundle
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Toast
import androidx.activity.result.contract.ActivityResultContracts
import androidx.appcompat.app.AppCompatActivity
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.camera.core.Preview
import androidx.camera.core.UseCaseGroup
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.core.content.ContextCompat
import org.kerasmixer.demo.databinding.ActivityMainBinding
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/** Camera preview with the model's top-3 classes and per-frame latency; the accelerator can be switched live. */
class MainActivity : AppCompatActivity() {

    private lateinit var binding: ActivityMainBinding
    private val analysisExecutor: ExecutorService = Executors.newSingleThreadExecutor()
    private var classifier: MixerClassifier? = null // touched only on analysisExecutor
    private var accelerator = MixerClassifier.Accelerator.CPU // likewise: what `classifier` runs on

    private val requestCamera =
        registerForActivityResult(ActivityResultContracts.RequestPermission()) { granted ->
            if (granted) startCamera() else binding.results.setText(R.string.camera_denied)
        }

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        binding = ActivityMainBinding.inflate(layoutInflater)
        setContentView(binding.root)
        setUpAcceleratorSwitch()
        if (ContextCompat.checkSelfPermission(this, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            startCamera()
        } else {
            requestCamera.launch(Manifest.permission.CAMERA)
        }
    }

    private fun setUpAcceleratorSwitch() {
        val choices = MixerClassifier.Accelerator.values()
        binding.delegate.adapter =
            ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, choices.map { it.name })
        binding.delegate.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                analysisExecutor.execute { loadClassifier(choices[position]) }
            }

            override fun onNothingSelected(parent: AdapterView<*>?) = Unit
        }
    }

    private fun loadClassifier(accelerator: MixerClassifier.Accelerator) {
        classifier?.close()
        classifier = null
        this.accelerator = accelerator
        classifier = try {
            MixerClassifier(this, accelerator)
        } catch (e: java.io.FileNotFoundException) {
            runOnUiThread { binding.results.setText(R.string.no_model) }
            null
        } catch (e: Throwable) { // a delegate this device lacks throws Errors (UnsatisfiedLinkError, ...) too
            fallBackToCpu(accelerator, e)
            null
        }
    }

    /**
     * Says what failed on `failed` and switches to the CPU (the spinner's listener reloads there), so the app stays
     * usable; if the CPU itself failed, the message is all there is.
     */
    private fun fallBackToCpu(failed: MixerClassifier.Accelerator, error: Throwable) {
        val cpu = MixerClassifier.Accelerator.CPU
        runOnUiThread {
            val next = if (failed == cpu) "" else "; using the CPU"
            Toast.makeText(this, "$failed: ${error.message ?: error}$next", Toast.LENGTH_LONG).show()
            binding.delegate.setSelection(cpu.ordinal)
        }
    }

    private fun startCamera() {
        val providerFuture = ProcessCameraProvider.getInstance(this)
        providerFuture.addListener({
            val provider = providerFuture.get()
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(binding.preview.surfaceProvider) }
            val analysis = ImageAnalysis.Builder()
                .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                .build()
                .also { it.setAnalyzer(analysisExecutor, ::analyze) }
            provider.unbindAll()
            // one ViewPort for both use cases: each analysis frame's cropRect is what the preview shows
            binding.preview.post {
                val group = UseCaseGroup.Builder().addUseCase(preview).addUseCase(analysis)
                binding.preview.viewPort?.let(group::setViewPort)
                provider.bindToLifecycle(this, CameraSelector.DEFAULT_BACK_CAMERA, group.build())
            }
        }, ContextCompat.getMainExecutor(this))
    }

    private fun analyze(image: ImageProxy) {
        image.use {
            val model = classifier ?: return
            val frame = upright(visible(it.toBitmap(), it.cropRect), it.imageInfo.rotationDegrees)
            val pixels = IntArray(frame.width * frame.height)
            frame.getPixels(pixels, 0, frame.width, 0, 0, frame.width, frame.height)
            val result = try {
                model.classify(pixels, frame.width, frame.height)
            } catch (e: Throwable) { // an uncaught exception would end the analysis thread: report, go to the CPU
                classifier?.close()
                classifier = null
                fallBackToCpu(accelerator, e)
                return
            }
            runOnUiThread {
                binding.results.text = result.top.joinToString("\n")
                binding.latency.text = "inference ${result.inferenceMs} ms, frame ${result.totalMs} ms"
            }
        }
    }

    /** The part of the frame the preview shows (the analysis crop rectangle of the shared ViewPort). */
    private fun visible(bitmap: Bitmap, crop: Rect): Bitmap =
        if (crop.width() == bitmap.width && crop.height() == bitmap.height) bitmap
        else Bitmap.createBitmap(bitmap, crop.left, crop.top, crop.width(), crop.height())

    private fun upright(bitmap: Bitmap, degrees: Int): Bitmap =
        if (degrees == 0) bitmap
        else Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, Matrix().apply { postRotate(degrees.toFloat()) }, true)

    override fun onDestroy() {
        super.onDestroy()
        analysisExecutor.execute { classifier?.close() }
        analysisExecutor.shutdown()
    }
}
