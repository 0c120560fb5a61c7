package dev.edgevit.core

import kotlin.math.ln
import kotlin.test.Test
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith

class PostprocessTest {
    @Test
    fun softmaxIsExpOverSum() {
        val p = Postprocess.softmax(doubleArrayOf(0.0, ln(2.0), ln(3.0)))
        assertEquals(listOf(1 / 6.0, 2 / 6.0, 3 / 6.0).map { "%.12f".format(it) }, p.map { "%.12f".format(it) })
    }

    @Test
    fun softmaxIsStableForLargeLogits() {
        val p = Postprocess.softmax(doubleArrayOf(1000.0, 1000.0))
        assertContentEquals(doubleArrayOf(0.5, 0.5), p)
    }

    @Test
    fun topKIsByDescendingLogitWithTiesByLowerIndex() {
        val top = Postprocess.topK(doubleArrayOf(1.0, 3.0, 3.0, 0.0, 3.0), 4)
        assertEquals(listOf(1, 2, 4, 0), top.map { it.index })
        assertEquals(top[0].probability, top[2].probability)
    }

    @Test
    fun topKIsCappedAtTheClassCount() {
        assertEquals(listOf(1, 0), Postprocess.topK(doubleArrayOf(0.0, 1.0), 5).map { it.index })
    }

    @Test
    fun int8OutputSubtractsTheZeroPoint() {
        val spec = TensorSpec("logits", DType.INT8, listOf(1, 3), null, Quant(0.5, 4))
        val out = ModelTensor.quantized(DType.INT8, listOf(1, 3), byteArrayOf(4, 6, 0))
        assertContentEquals(doubleArrayOf(0.0, 1.0, -2.0), Postprocess.logits(out, spec))
    }

    @Test
    fun outputOfTheWrongSizeIsRejected() {
        val spec = TensorSpec("logits", DType.FLOAT32, listOf(1, 3), null, null)
        assertFailsWith<IllegalArgumentException> {
            Postprocess.logits(ModelTensor.float32(listOf(1, 2), floatArrayOf(0f, 1f)), spec)
        }
    }

    @Test
    fun latencyWindowKeepsTheMedianOfRecentRuns() {
        val w = LatencyWindow(capacity = 3)
        assertEquals(true, w.median().isNaN())
        w.add(5.0)
        w.add(1.0)
        assertEquals(3.0, w.median())
        w.add(100.0)
        assertEquals(5.0, w.median())
        w.add(2.0) // drops 5.0: 1, 100, 2
        assertEquals(2.0, w.median())
    }

    @Test
    fun classifierFeedsTheEngineThePreprocessedFrameAndLabelsTheTopK() {
        val bundle = Bundle.parse(Fixtures.bundleJson().toString())
        val model = bundle.model("tflite_int8")
        var seen: ModelTensor? = null
        val engine =
            object : Engine {
                override val model = model

                override fun run(input: ModelTensor): ModelTensor {
                    seen = input
                    return ModelTensor.quantized(DType.INT8, listOf(1, 3), byteArrayOf(4, 10, 6)) // logits 0, 3, 1
                }

                override fun close() {}
            }
        var now = 0L
        val classifier = Classifier(bundle, engine, k = 2, clock = { now.also { now += 2_000_000 } })
        val frame = Fixtures.numberedFrame(2, 2, rotation = 90)
        val result = classifier.classify(frame)
        val want = Preprocessor(bundle.preprocess).run(frame, model.input)
        assertContentEquals(want.bytes, seen!!.bytes)
        assertEquals(listOf("b", "c"), result.labels)
        assertEquals(2.0, result.latencyMillis)
        assertEquals(2.0, result.medianLatencyMillis)
    }
}
