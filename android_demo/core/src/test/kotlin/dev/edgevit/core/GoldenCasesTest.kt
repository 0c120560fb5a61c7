package dev.edgevit.core

import org.junit.jupiter.api.DynamicTest
import org.junit.jupiter.api.TestFactory
import java.io.File
import kotlin.math.abs
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import kotlin.test.fail

/**
 * The golden cases of a real bundle (`edgevit bundle`, docs/reference/bundle.md): for every case and model, the
 * input tensor this core computes equals Python's within 1e-6 (float32) or exactly (int8/uint8), and the
 * softmax/top-k of the case's expected output equals Python's.
 */
class GoldenCasesTest {
    private val bundleDir: File = Fixtures.bundleDir()
    private val bundle = Bundle.load(bundleDir)
    private val golden = GoldenCases.load(File(bundleDir, "golden"))

    @TestFactory
    fun inputTensorsMatchPython(): List<DynamicTest> {
        val pre = Preprocessor(bundle.preprocess)
        val tests =
            golden.cases.flatMap { case ->
                bundle.models.map { model ->
                    DynamicTest.dynamicTest("${case.id} ${model.key}: input tensor") {
                        val exp = case.expected[model.key] ?: fail("${case.id} has no expected entry for ${model.key}")
                        val file =
                            File(
                                golden.dir,
                                exp.inputFile ?: fail("${case.id}.expected.${model.key}.input missing"),
                            )
                        val want = ModelTensor.fromLittleEndian(model.input, file.readBytes())
                        val got = pre.run(case.frame(golden.dir), model.input)
                        assertTensorsMatch(want, got, "${case.id} ${model.key}")
                    }
                }
            }
        assertTrue(tests.isNotEmpty(), "the bundle's golden/cases.json has no cases")
        return tests
    }

    @TestFactory
    fun topKMatchesPython(): List<DynamicTest> =
        golden.cases.flatMap { case ->
            bundle.models.map { model ->
                DynamicTest.dynamicTest("${case.id} ${model.key}: softmax top-k") {
                    val exp = case.expected.getValue(model.key)
                    val z = exp.logitsFor(model, "${case.id}.expected.${model.key}") ?: fail("no logits or raw_output")
                    val want = exp.topK ?: fail("${case.id}.expected.${model.key}.top_k missing")
                    val got = Postprocess.topK(z, golden.topK)
                    assertEquals(want.map { it.index }, got.map { it.index }, "top-k classes")
                    for ((w, g) in want.zip(
                        got,
                    )) {
                        assertEquals(w.probability, g.probability, 1e-6, "p of class ${w.index}")
                    }
                }
            }
        }

    companion object {
        /** Equal within 1e-6 for float32, exactly for int8/uint8; the message says where the first mismatch is. */
        fun assertTensorsMatch(
            want: ModelTensor,
            got: ModelTensor,
            what: String,
        ) {
            assertEquals(want.dtype, got.dtype, "$what: dtype")
            assertEquals(want.shape, got.shape, "$what: shape")
            var bad = 0
            var first = -1
            var worst = 0.0
            for (i in 0 until want.size) {
                val d = abs(want.valueAt(i) - got.valueAt(i))
                val tol = if (want.dtype == DType.FLOAT32) 1e-6 else 0.0
                if (d > tol) {
                    if (first < 0) first = i
                    bad++
                }
                worst = maxOf(worst, d)
            }
            if (bad > 0) {
                fail(
                    "$what: $bad of ${want.size} values differ (max |diff| $worst); first at flat index $first " +
                        "(shape ${want.shape}): python ${want.valueAt(first)}, kotlin ${got.valueAt(first)}",
                )
            }
        }
    }
}
