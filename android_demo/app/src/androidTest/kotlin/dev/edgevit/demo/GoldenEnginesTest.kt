package dev.edgevit.demo

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import dev.edgevit.core.Backend
import dev.edgevit.core.DType
import dev.edgevit.core.GoldenCases
import dev.edgevit.core.ModelSpec
import dev.edgevit.core.ModelTensor
import dev.edgevit.core.Postprocess
import dev.edgevit.core.Preprocessor
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.junit.runner.RunWith
import java.io.File
import kotlin.math.abs

/**
 * The bundle's golden cases on a device, through the real engines: the core's input tensors equal Python's (on
 * ART, as on the JVM), and ExecuTorch / LiteRT on the phone give the logits the same artifacts gave in their
 * Python runtimes (same top-1, logits within a tolerance per precision).
 *
 * Run: `./gradlew :app:connectedDebugAndroidTest -Pedgevit.bundle=DIR` with a device or emulator attached.
 */
@RunWith(AndroidJUnit4::class)
class GoldenEnginesTest {
    private val context = InstrumentationRegistry.getInstrumentation().targetContext
    private val bundle = BundleAssets.load(context)
    private val golden: GoldenCases = BundleAssets.goldenCases(context)

    @Test
    fun inputTensorsMatchPythonOnDevice() {
        val pre = Preprocessor(bundle.preprocess)
        for (case in golden.cases) {
            val frame = case.frame(golden.dir)
            for (model in bundle.models) {
                val want = expectedInput(case.id, model)
                val got = pre.run(frame, model.input)
                val tol = if (model.input.dtype == DType.FLOAT32) 1e-6 else 0.0
                for (i in 0 until want.size) {
                    val d = abs(want.valueAt(i) - got.valueAt(i))
                    if (d >
                        tol
                    ) {
                        fail(
                            "${case.id} ${model.key}: input value $i is ${got.valueAt(
                                i,
                            )}, Python ${want.valueAt(i)}",
                        )
                    }
                }
            }
        }
    }

    @Test
    fun executorchMatchesPythonRuntime() = engineMatchesPython(Backend.EXECUTORCH)

    @Test
    fun litertMatchesPythonRuntime() = engineMatchesPython(Backend.TFLITE)

    private fun engineMatchesPython(backend: Backend) {
        val models = bundle.models.filter { it.backend == backend }
        assertTrue("the bundle has no ${backend.json} model", models.isNotEmpty())
        for (model in models) {
            openEngine(context, model).use { engine ->
                for (case in golden.cases) {
                    val path = "${case.id}.expected.${model.key}"
                    val exp = case.expected[model.key] ?: missing("$path")
                    val want = exp.logitsFor(model, path) ?: missing("$path.logits")
                    val got = Postprocess.logits(engine.run(expectedInput(case.id, model)), model.output)
                    val tol = tolerance(model, want)
                    val worst = want.indices.maxOf { abs(want[it] - got[it]) }
                    assertTrue("${case.id} ${model.key}: logits differ by $worst > $tol", worst <= tol)
                    val top = Postprocess.topK(want, 2)
                    val margin = if (top.size > 1) want[top[0].index] - want[top[1].index] else Double.MAX_VALUE
                    if (margin > 2 * tol) {
                        assertEquals("${case.id} ${model.key}: top-1", top[0].index, Postprocess.topK(got, 1)[0].index)
                    }
                }
            }
        }
    }

    /** Kernels differ between the phone and the Python host: float within 1e-3 of the logit scale (fp16: 2e-2),
     *  integer outputs within two quantization steps. */
    private fun tolerance(
        model: ModelSpec,
        z: DoubleArray,
    ): Double {
        val q = model.output.quant
        if (q != null) return 2 * q.scale + 1e-9
        val scale = maxOf(1.0, z.maxOf { abs(it) })
        return (if (model.precision == "fp16") 2e-2 else 1e-3) * scale
    }

    private fun missing(what: String): Nothing = throw AssertionError("golden cases: $what is missing")

    private fun expectedInput(
        caseId: String,
        model: ModelSpec,
    ): ModelTensor {
        val name =
            golden.cases
                .first { it.id == caseId }
                .expected[model.key]
                ?.inputFile
                ?: missing("$caseId.expected.${model.key}.input")
        return ModelTensor.fromLittleEndian(model.input, File(golden.dir, name).readBytes())
    }
}
