package dev.edgevit.core

import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.CsvSource
import kotlin.test.Test
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals

/** The app pipeline on inputs small enough to work out by hand (bundle.md, "The app pipeline"). */
class PipelineTest {
    /** Identity preprocessing: no resize (shorter side already 2), crop 2x2, x = pixel. */
    private fun identity(colorOrder: ColorOrder = ColorOrder.RGB) =
        PreprocessSpec(
            colorOrder,
            1.0,
            listOf(0.0, 0.0, 0.0),
            listOf(1.0, 1.0, 1.0),
            2,
            Interpolation.BILINEAR,
            true,
            2,
            2,
        )

    private fun tensorSpec(
        dtype: DType,
        layout: Layout,
        quant: Quant? = null,
    ) = TensorSpec("image", dtype, if (layout == Layout.NCHW) listOf(1, 3, 2, 2) else listOf(1, 2, 2, 3), layout, quant)

    /** The red values of the upright image, row by row. */
    private fun reds(img: Preprocessor.Image): List<List<Int>> =
        List(img.height) { r -> List(img.width) { c -> img.px[3 * (r * img.width + c)].toInt() } }

    @ParameterizedTest(name = "{0}")
    @CsvSource("RGBA_8888", "BGRA_8888")
    fun readsRedGreenBlueByPixelFormat(format: PixelFormat) {
        val img = Preprocessor(identity()).upright(Fixtures.numberedFrame(3, 2, format = format))
        // pixel (1, 2): R = 12, G = 112, B = 212 whatever the byte order of the buffer
        val o = 3 * (1 * 3 + 2)
        assertEquals(listOf(12.0, 112.0, 212.0), img.px.slice(o until o + 3))
    }

    @ParameterizedTest(name = "rotation {0}")
    @CsvSource(
        "0,   '0 1 2 | 10 11 12'",
        "90,  '10 0 | 11 1 | 12 2'",
        "180, '12 11 10 | 2 1 0'",
        "270, '2 12 | 1 11 | 0 10'",
    )
    fun rotatesClockwiseByRotation(
        rotation: Int,
        expected: String,
    ) {
        // a 3-wide, 2-high buffer whose red value is 10 * row + column
        val img = Preprocessor(identity()).upright(Fixtures.numberedFrame(3, 2, rotation))
        val want = expected.split('|').map { row -> row.trim().split(Regex(" +")).map(String::toInt) }
        assertEquals(want, reds(img))
    }

    @Test
    fun rowPaddingIsIgnored() {
        val p = Preprocessor(identity())
        val tight = p.upright(Fixtures.numberedFrame(3, 2, 90))
        val padded = p.upright(Fixtures.numberedFrame(3, 2, 90, padding = 7))
        assertContentEquals(tight.px, padded.px)
    }

    @Test
    fun nchwPutsChannelsFirst() {
        val t = Preprocessor(identity()).run(Fixtures.numberedFrame(2, 2), tensorSpec(DType.FLOAT32, Layout.NCHW))
        assertEquals(listOf(1, 3, 2, 2), t.shape)
        val want = listOf(0, 1, 10, 11, 100, 101, 110, 111, 200, 201, 210, 211).map(Int::toFloat)
        assertEquals(want, t.floats!!.toList())
    }

    @Test
    fun nhwcPutsChannelsLast() {
        val t = Preprocessor(identity()).run(Fixtures.numberedFrame(2, 2), tensorSpec(DType.FLOAT32, Layout.NHWC))
        assertEquals(listOf(1, 2, 2, 3), t.shape)
        val want = listOf(0, 100, 200, 1, 101, 201, 10, 110, 210, 11, 111, 211).map(Int::toFloat)
        assertEquals(want, t.floats!!.toList())
    }

    @Test
    fun colorOrderBgrPutsBlueFirst() {
        val t =
            Preprocessor(
                identity(ColorOrder.BGR),
            ).run(Fixtures.numberedFrame(2, 2), tensorSpec(DType.FLOAT32, Layout.NCHW))
        val want = listOf(200, 201, 210, 211, 100, 101, 110, 111, 0, 1, 10, 11).map(Int::toFloat)
        assertEquals(want, t.floats!!.toList())
    }

    @Test
    fun normalisesWithMeanAndStdPerChannel() {
        val spec =
            PreprocessSpec(
                ColorOrder.RGB,
                255.0,
                listOf(0.5, 0.25, 0.0),
                listOf(0.5, 0.25, 2.0),
                2,
                Interpolation.BILINEAR,
                true,
                2,
                2,
            )
        val t = Preprocessor(spec).run(Fixtures.numberedFrame(2, 2), tensorSpec(DType.FLOAT32, Layout.NHWC))
        // pixel (1, 1): R 11, G 111, B 211
        val want = listOf((11 / 255.0 - 0.5) / 0.5, (111 / 255.0 - 0.25) / 0.25, (211 / 255.0 - 0.0) / 2.0)
        assertEquals(want.map(Double::toFloat), t.floats!!.toList().subList(9, 12))
    }

    @Test
    fun int8InputAddsTheZeroPoint() {
        // x = pixel; q = round_half_away(x / 2) - 100
        val t =
            Preprocessor(
                identity(),
            ).run(Fixtures.numberedFrame(2, 2), tensorSpec(DType.INT8, Layout.NCHW, Quant(2.0, -100)))
        val want = listOf(-100, -99, -95, -94, -50, -49, -45, -44, 0, 1, 5, 6)
        assertEquals(want, t.bytes!!.map(Byte::toInt))
    }

    @Test
    fun uint8InputAddsTheZeroPointAndClamps() {
        val t =
            Preprocessor(
                identity(),
            ).run(Fixtures.numberedFrame(2, 2), tensorSpec(DType.UINT8, Layout.NHWC, Quant(1.0, 50)))
        // x + 50, clamped to 255: R 0, 1, 10, 11 -> 50, 51, 60, 61; G 100.. -> 150..; B 200.. -> 250, 251, 255, 255
        val want = listOf(50, 150, 250, 51, 151, 251, 60, 160, 255, 61, 161, 255)
        assertEquals(want, t.bytes!!.map { it.toInt() and 0xFF })
    }

    @ParameterizedTest(name = "quantize({0}) = {1}")
    @CsvSource("2.5, 3", "-2.5, -3", "0.5, 1", "-0.5, -1", "2.4999, 2", "-1000, -128", "1000, 127", "0.0, 0")
    fun quantizeRoundsHalfAwayFromZeroAndClamps(
        x: Double,
        q: Int,
    ) {
        assertEquals(q, Preprocessor.quantize(x, Quant(1.0, 0), DType.INT8))
    }

    @Test
    fun bilinearDownscaleWeightsArePils() {
        // 4 -> 2 with antialias: the filter widens to 2 input pixels; PIL gives 3/7, 3/7, 1/7 and mirrored
        val co = Preprocessor.coefficients(4, 2, Interpolation.BILINEAR, antialias = true)
        assertEquals(listOf(0, 1), co.lo.toList())
        assertDoubles(doubleArrayOf(3 / 7.0, 3 / 7.0, 1 / 7.0), co.weights[0])
        assertDoubles(doubleArrayOf(1 / 7.0, 3 / 7.0, 3 / 7.0), co.weights[1])
    }

    @Test
    fun bilinearUpscaleWeightsArePils() {
        val co = Preprocessor.coefficients(2, 4, Interpolation.BILINEAR, antialias = true)
        assertEquals(listOf(0, 0, 0, 1), co.lo.toList())
        assertDoubles(doubleArrayOf(1.0), co.weights[0])
        assertDoubles(doubleArrayOf(0.75, 0.25), co.weights[1])
        assertDoubles(doubleArrayOf(0.25, 0.75), co.weights[2])
        assertDoubles(doubleArrayOf(1.0), co.weights[3])
    }

    @Test
    fun bicubicDownscaleWeightsAreKeysCubic() {
        // 4 -> 2, antialias: x = (j - 1 + 0.5) / 2 = -0.25, 0.25, 0.75, 1.25 with Keys' a = -0.5
        val w = doubleArrayOf(0.8671875, 0.8671875, 0.2265625, -0.0703125)
        val co = Preprocessor.coefficients(4, 2, Interpolation.BICUBIC, antialias = true)
        assertDoubles(DoubleArray(4) { w[it] / 1.890625 }, co.weights[0])
    }

    @Test
    fun withoutAntialiasTheFilterDoesNotWiden() {
        val co = Preprocessor.coefficients(4, 2, Interpolation.BILINEAR, antialias = false)
        // center 1.0, support 1: inputs 0 and 1 at distance 0.5 each
        assertEquals(0, co.lo[0])
        assertDoubles(doubleArrayOf(0.5, 0.5), co.weights[0])
    }

    @ParameterizedTest(name = "{0}x{1} -> shorter {2}")
    @CsvSource("29, 37, 36, 36, 45", "37, 29, 36, 45, 36", "10, 10, 7, 7, 7", "1, 200, 36, 36, 7200")
    fun resizedSizeIsTorchvisions(
        h: Int,
        w: Int,
        shorter: Int,
        oh: Int,
        ow: Int,
    ) {
        assertEquals(oh to ow, Preprocessor.resizedSize(h, w, shorter))
    }

    @ParameterizedTest(name = "width {0}, crop {1} -> left {2}")
    @CsvSource("5, 2, 2", "7, 2, 2", "3, 2, 0", "4, 2, 1", "9, 2, 4", "11, 2, 4")
    fun centerCropRoundsHalfToEven(
        width: Int,
        crop: Int,
        left: Int,
    ) {
        val img = Preprocessor.Image(1, width)
        for (c in 0 until width) img.px[3 * c] = c.toDouble()
        val out = Preprocessor(identity()).centerCrop(img, 1, crop)
        assertEquals(left.toDouble(), out.px[0])
    }

    @Test
    fun constantImageStaysConstantThroughResizeAndCrop() {
        val data = ByteArray(4 * 7 * 5)
        for (i in 0 until 35) {
            data[4 * i] = 50
            data[4 * i + 1] = 100
            data[4 * i + 2] = 150.toByte()
        }
        val spec =
            PreprocessSpec(
                ColorOrder.RGB,
                255.0,
                listOf(0.0, 0.0, 0.0),
                listOf(1.0, 1.0, 1.0),
                4,
                Interpolation.BICUBIC,
                true,
                3,
                4,
            )
        val input = TensorSpec("image", DType.FLOAT32, listOf(1, 3, 3, 4), Layout.NCHW, null)
        val t = Preprocessor(spec).run(Frame(data, 7, 5, 28, PixelFormat.RGBA_8888, 90), input)
        for (c in 0 until 3) {
            for (i in 0 until 12) assertEquals(((c + 1) * 50 / 255.0).toFloat(), t.floats!![c * 12 + i], 1e-6f)
        }
    }

    private fun assertDoubles(
        want: DoubleArray,
        got: DoubleArray,
    ) {
        assertEquals(want.size, got.size, "weights ${got.toList()}")
        for (i in want.indices) assertEquals(want[i], got[i], 1e-12, "weight $i of ${got.toList()}")
    }
}
