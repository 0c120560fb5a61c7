package dev.edgevit.core

import org.json.JSONArray
import org.json.JSONObject
import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.ValueSource
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNull
import kotlin.test.assertTrue

class BundleTest {
    private fun rejects(
        text: String,
        key: String,
    ): BundleFormatException {
        val e = assertFailsWith<BundleFormatException> { Bundle.parse(text) }
        assertEquals(key, e.key, "error was: ${e.message}")
        assertTrue(e.message!!.startsWith("$key: "), "the message names the key first: ${e.message}")
        return e
    }

    @Test
    fun parsesEveryField() {
        val b = Bundle.parse(Fixtures.bundleJson().toString())
        assertEquals(Platform.ANDROID, b.platform)
        assertEquals(listOf("a", "b", "c"), b.classes)
        assertEquals(2, b.preprocess.resizeShorter)
        assertEquals(listOf(0.5, 0.25, 0.0), b.preprocess.mean.toList())
        val m = b.model("tflite_int8")
        assertEquals(Backend.TFLITE, m.backend)
        assertEquals(DType.INT8, m.input.dtype)
        assertEquals(Layout.NHWC, m.input.layout)
        assertEquals(Quant(0.0078125, -3), m.input.quant)
        assertEquals(Quant(0.5, 4), m.output.quant)
        assertNull(b.model("executorch_fp32").input.quant)
    }

    @Test
    fun ignoresKeysItDoesNotKnow() {
        val root = Fixtures.bundleJson().put("created_by", JSONObject().put("edgevit", "0.1.0")).put("golden", "x")
        root.getJSONObject("preprocess").put("source", "timm")
        assertEquals(2, Bundle.parse(root.toString()).models.size)
    }

    @ParameterizedTest(name = "missing {0} is named")
    @ValueSource(
        strings = [
            "format", "version", "platform", "model_name", "classes", "preprocess", "preprocess.mean",
            "preprocess.crop", "preprocess.interpolation", "preprocess.antialias", "models", "models[0].key",
            "models[0].sha256", "models[1].input.layout", "models[1].input.quant", "models[0].input.quant",
            "models[1].output.shape", "models[0].input.name", "models[1].input.quant.zero_point",
        ],
    )
    fun missingKeyIsNamed(path: String) {
        rejects(Fixtures.bundleWith(path, null), path)
    }

    @Test
    fun unknownVersionIsRejected() {
        val e = rejects(Fixtures.bundleWith("version", 2), "version")
        assertTrue("2" in e.message!!)
    }

    @Test
    fun unknownFormatIsRejected() {
        rejects(Fixtures.bundleWith("format", "something-else"), "format")
    }

    @Test
    fun classCountMismatchIsNamed() {
        val e = rejects(Fixtures.bundleWith("classes", JSONArray(listOf("a", "b"))), "models[0].output.shape")
        assertTrue("2" in e.message!!, e.message)
        rejects(Fixtures.bundleWith("models[1].output.shape", JSONArray(listOf(1, 4))), "models[1].output.shape")
    }

    @ParameterizedTest(name = "bad value of {0} is named")
    @ValueSource(
        strings = [
            "platform=windows", "preprocess.color_order=RBG", "preprocess.interpolation=nearest",
            "models[0].input.layout=NCWH", "models[0].input.dtype=float16", "models[0].backend=onnx",
            "models[0].precision=int4", "models[0].key=a.b", "models[0].file=../x.pte", "models[0].file=/abs.pte",
            "models[0].sha256=ABC", "preprocess.value_scale=0", "preprocess.resize_shorter=0",
        ],
    )
    fun badValueIsNamed(spec: String) {
        val (path, value) = spec.split('=')
        val v: Any = value.toIntOrNull() ?: value
        rejects(Fixtures.bundleWith(path, v), path)
    }

    @Test
    fun wrongTypesAreNamed() {
        rejects(Fixtures.bundleWith("version", "1"), "version")
        rejects(Fixtures.bundleWith("preprocess.antialias", "yes"), "preprocess.antialias")
        rejects(Fixtures.bundleWith("preprocess.std", JSONArray(listOf(1, 1))), "preprocess.std")
        rejects(Fixtures.bundleWith("preprocess.std", JSONArray(listOf(1, 0, 1))), "preprocess.std")
        rejects(Fixtures.bundleWith("preprocess.crop", JSONArray(listOf(3, 2))), "preprocess.crop")
        rejects(
            Fixtures.bundleWith("models[0].input.shape", JSONArray(listOf(1, 3, 2, 2.5))),
            "models[0].input.shape[3]",
        )
        rejects(Fixtures.bundleWith("classes", JSONArray(listOf("a", 1, "c"))), "classes[1]")
    }

    @Test
    fun inputShapeMustMatchLayoutAndCrop() {
        // an NHWC shape declared as NCHW: the mix-up an app would otherwise feed silently
        rejects(Fixtures.bundleWith("models[0].input.shape", JSONArray(listOf(1, 2, 2, 3))), "models[0].input.shape")
        rejects(Fixtures.bundleWith("models[1].input.layout", "NCHW"), "models[1].input.shape")
    }

    @Test
    fun quantIsRequiredExactlyForIntegerTensors() {
        rejects(Fixtures.bundleWith("models[1].input.quant", JSONObject.NULL), "models[1].input.quant")
        val q = JSONObject().put("scale", 0.1).put("zero_point", 0)
        rejects(Fixtures.bundleWith("models[0].input.quant", q), "models[0].input.quant")
        rejects(Fixtures.bundleWith("models[1].input.quant.zero_point", 128), "models[1].input.quant.zero_point")
        rejects(Fixtures.bundleWith("models[1].input.quant.scale", 0), "models[1].input.quant.scale")
    }

    @Test
    fun duplicateModelKeyIsNamed() {
        val root = Fixtures.bundleJson()
        root.getJSONArray("models").getJSONObject(1).put("key", "executorch_fp32")
        rejects(root.toString(), "models[1].key")
    }

    @Test
    fun notJsonIsReported() {
        rejects("{not json", "bundle.json")
    }
}
