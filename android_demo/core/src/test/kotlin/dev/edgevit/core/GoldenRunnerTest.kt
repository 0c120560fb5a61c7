package dev.edgevit.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.api.io.TempDir
import java.io.File
import kotlin.test.Test
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith

class GoldenRunnerTest {
    @TempDir
    lateinit var tmp: File

    /** A bundle folder with the fixture bundle.json and one case (a 3x2 BGRA frame, rotation 90, padded rows). */
    private fun fixture(expected: JSONObject?): Pair<File, File> {
        val bundleDir = File(tmp, "bundle").apply { mkdirs() }
        File(bundleDir, "bundle.json").writeText(Fixtures.bundleJson().toString())
        val cases = File(bundleDir, "golden").apply { mkdirs() }
        val frame = Fixtures.numberedFrame(3, 2, 90, PixelFormat.BGRA_8888, padding = 5)
        File(cases, "c0.raw").writeBytes(frame.data)
        val case =
            JSONObject()
                .put("id", "c0")
                .put("buffer", "c0.raw")
                .put("width", 3)
                .put("height", 2)
                .put("row_stride", 17)
                .put("pixel_format", "BGRA_8888")
                .put("rotation", 90)
                .put("source", "numbered")
        if (expected != null) case.put("expected", expected)
        File(
            cases,
            "cases.json",
        ).writeText(
            JSONObject()
                .put("version", 1)
                .put("top_k", 2)
                .put("cases", JSONArray().put(case))
                .toString(),
        )
        return bundleDir to cases
    }

    @Test
    fun writesEveryInputTensorAndTheTopKOfTheExpectedOutputs() {
        val expected =
            JSONObject()
                .put("executorch_fp32", JSONObject().put("logits", JSONArray(listOf(0.5, 2.0, 2.0))))
                .put("tflite_int8", JSONObject().put("raw_output", JSONArray(listOf(4, 2, 10))))
        val (bundleDir, casesDir) = fixture(expected)
        val out = File(tmp, "out/results.json")
        assertEquals(2, GoldenRunner.run(bundleDir, casesDir, out))

        val doc = JSONObject(out.readText())
        assertEquals(GoldenRunner.NAME, doc.getString("runner"))
        val results = doc.getJSONArray("results")
        val bundle = Bundle.load(bundleDir)
        val frame = GoldenCases.load(casesDir).cases[0].frame(casesDir)
        for (i in 0 until 2) {
            val r = results.getJSONObject(i)
            val model = bundle.model(r.getString("model"))
            val want = Preprocessor(bundle.preprocess).run(frame, model.input).toLittleEndian()
            assertContentEquals(want, File(out.parentFile, r.getString("input_file")).readBytes(), model.key)
        }
        // fp32: logits 0.5, 2, 2 -> classes 1, 2 (tie: lower index first)
        assertEquals(listOf(1, 2), topIndices(results.getJSONObject(0)))
        // int8 raw 4, 2, 10 with zero point 4, scale 0.5 -> logits 0, -1, 3 -> classes 2, 0
        assertEquals(listOf(2, 0), topIndices(results.getJSONObject(1)))
    }

    @Test
    fun withoutExpectedOutputsTheTopKIsEmpty() {
        val (bundleDir, casesDir) = fixture(null)
        val out = File(tmp, "results.json")
        GoldenRunner.run(bundleDir, casesDir, out)
        assertEquals(emptyList(), topIndices(JSONObject(out.readText()).getJSONArray("results").getJSONObject(0)))
    }

    @Test
    fun malformedCasesNameTheKey() {
        val (bundleDir, casesDir) = fixture(null)
        val doc = JSONObject(File(casesDir, "cases.json").readText())
        doc.getJSONArray("cases").getJSONObject(0).put("rotation", 45)
        File(casesDir, "cases.json").writeText(doc.toString())
        val e = assertFailsWith<BundleFormatException> { GoldenRunner.run(bundleDir, casesDir, File(tmp, "r.json")) }
        assertEquals("cases[0].rotation", e.key)
    }

    @Test
    fun rawOutputOfTheWrongLengthIsNamed() {
        val (bundleDir, casesDir) =
            fixture(
                JSONObject().put("tflite_int8", JSONObject().put("raw_output", JSONArray(listOf(1, 2)))),
            )
        val e = assertFailsWith<BundleFormatException> { GoldenRunner.run(bundleDir, casesDir, File(tmp, "r.json")) }
        assertEquals(true, e.key.endsWith("tflite_int8.raw_output"), e.key)
    }

    @Test
    fun reproducesTheRealBundlesGoldenInputs() {
        val bundleDir = Fixtures.bundleDir()
        val out = File(tmp, "real/results.json")
        val n = GoldenRunner.run(bundleDir, File(bundleDir, "golden"), out)
        val bundle = Bundle.load(bundleDir)
        val golden = GoldenCases.load(File(bundleDir, "golden"))
        assertEquals(golden.cases.size * bundle.models.size, n)
        val results = JSONObject(out.readText()).getJSONArray("results")
        for (i in 0 until results.length()) {
            val r = results.getJSONObject(i)
            val model = bundle.model(r.getString("model"))
            val exp =
                golden.cases
                    .first { it.id == r.getString("id") }
                    .expected
                    .getValue(model.key)
            val want = ModelTensor.fromLittleEndian(model.input, File(golden.dir, exp.inputFile!!).readBytes())
            val got =
                ModelTensor.fromLittleEndian(
                    model.input,
                    File(out.parentFile, r.getString("input_file")).readBytes(),
                )
            GoldenCasesTest.assertTensorsMatch(want, got, "${r.getString("id")} ${model.key} (runner)")
            assertEquals(exp.topK!!.map { it.index }, topIndices(r), "${r.getString("id")} ${model.key} top-k")
        }
    }

    private fun topIndices(r: JSONObject): List<Int> {
        val a = r.getJSONArray("top_k")
        return List(a.length()) { a.getJSONArray(it).getInt(0) }
    }
}
