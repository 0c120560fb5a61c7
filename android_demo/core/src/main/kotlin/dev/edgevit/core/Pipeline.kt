package dev.edgevit.core

import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs
import kotlin.math.floor
import kotlin.math.max
import kotlin.math.min
import kotlin.math.truncate

/** Byte order of a 4-byte pixel: RGBA_8888 is R,G,B,A (CameraX, Android Bitmap); BGRA_8888 is B,G,R,A (iOS). */
enum class PixelFormat(
    val json: String,
    val r: Int,
    val g: Int,
    val b: Int,
) {
    RGBA_8888("RGBA_8888", 0, 1, 2),
    BGRA_8888("BGRA_8888", 2, 1, 0),
}

/**
 * A camera frame or decoded photo as raw bytes: [height] rows of [rowStride] bytes, 4 bytes a pixel, and the
 * clockwise [rotation] (0, 90, 180, 270) that makes it upright (CameraX `ImageInfo.rotationDegrees`).
 */
class Frame(
    val data: ByteArray,
    val width: Int,
    val height: Int,
    val rowStride: Int,
    val format: PixelFormat,
    val rotation: Int,
) {
    init {
        require(width > 0 && height > 0) { "frame size ${width}x$height must be positive" }
        require(rowStride >= 4 * width) { "row stride $rowStride is less than 4 * width ${4 * width}" }
        require(data.size >= rowStride.toLong() * (height - 1) + 4L * width) {
            "frame buffer has ${data.size} bytes, needs ${rowStride.toLong() * (height - 1) + 4L * width} " +
                "for ${width}x$height with row stride $rowStride"
        }
        require(rotation in ROTATIONS) { "rotation $rotation is not one of $ROTATIONS" }
    }

    companion object {
        val ROTATIONS = listOf(0, 90, 180, 270)
    }
}

/**
 * A tensor in a model's dtype and layout: float32 values in [floats], or int8/uint8 values in [bytes] (int8 as
 * two's complement, uint8 as its unsigned byte).
 */
class ModelTensor private constructor(
    val dtype: DType,
    val shape: List<Int>,
    val floats: FloatArray?,
    val bytes: ByteArray?,
) {
    val size: Int get() = floats?.size ?: bytes!!.size

    /** Element [i] as a real number: the float, or the integer value of an int8/uint8 (not dequantized). */
    fun valueAt(i: Int): Double =
        when (dtype) {
            DType.FLOAT32 -> floats!![i].toDouble()
            DType.INT8 -> bytes!![i].toDouble()
            DType.UINT8 -> (bytes!![i].toInt() and 0xFF).toDouble()
        }

    /** The little-endian bytes of this tensor (the golden `.bin` format). */
    fun toLittleEndian(): ByteArray =
        floats?.let { f ->
            ByteBuffer
                .allocate(4 * f.size)
                .order(ByteOrder.LITTLE_ENDIAN)
                .apply { asFloatBuffer().put(f) }
                .array()
        } ?: bytes!!.copyOf()

    companion object {
        /** A float32 tensor; [values].size must equal the product of [shape]. */
        fun float32(
            shape: List<Int>,
            values: FloatArray,
        ): ModelTensor {
            require(values.size == shape.fold(1) { a, b -> a * b }) { "${values.size} values for shape $shape" }
            return ModelTensor(DType.FLOAT32, shape, values, null)
        }

        /** An int8 or uint8 tensor of raw bytes; [values].size must equal the product of [shape]. */
        fun quantized(
            dtype: DType,
            shape: List<Int>,
            values: ByteArray,
        ): ModelTensor {
            require(dtype.isQuantized) { "$dtype is not a quantized dtype" }
            require(values.size == shape.fold(1) { a, b -> a * b }) { "${values.size} values for shape $shape" }
            return ModelTensor(dtype, shape, null, values)
        }

        /** Reads a little-endian tensor of [spec]'s dtype and shape (a golden `.bin`). */
        fun fromLittleEndian(
            spec: TensorSpec,
            bytes: ByteArray,
        ): ModelTensor {
            val n = spec.size
            return when (spec.dtype) {
                DType.FLOAT32 -> {
                    require(bytes.size == 4 * n) { "${bytes.size} bytes, expected ${4 * n} for float32 ${spec.shape}" }
                    val f = FloatArray(n)
                    ByteBuffer
                        .wrap(bytes)
                        .order(ByteOrder.LITTLE_ENDIAN)
                        .asFloatBuffer()
                        .get(f)
                    float32(spec.shape, f)
                }

                else -> {
                    require(bytes.size == n) { "${bytes.size} bytes, expected $n for ${spec.dtype.json} ${spec.shape}" }
                    quantized(spec.dtype, spec.shape, bytes.copyOf())
                }
            }
        }
    }
}

/**
 * The app pipeline of docs/reference/bundle.md, exactly: frame -> upright RGB -> resize of the shorter side ->
 * centre crop -> normalise -> layout -> dtype. All arithmetic is float64 in the order the spec writes it.
 */
class Preprocessor(
    val spec: PreprocessSpec,
) {
    /**
     * Turns [frame] into the input tensor of a model whose input is [input].
     *
     * @return a tensor of [input]'s dtype, layout and shape.
     * @throws IllegalArgumentException when [input] does not fit the crop (a bundle that passed [Bundle.parse]
     *   always fits).
     */
    fun run(
        frame: Frame,
        input: TensorSpec,
    ): ModelTensor {
        val upright = upright(frame)
        val resized = resize(upright)
        val cropped = centerCrop(resized, spec.cropHeight, spec.cropWidth)
        val chw = normalize(cropped)
        return toTensor(chw, input)
    }

    /** Step 1: rotate clockwise by [Frame.rotation] and read R, G, B by the pixel format (alpha ignored). */
    fun upright(frame: Frame): Image {
        val w = frame.width
        val h = frame.height
        val (ow, oh) = if (frame.rotation == 90 || frame.rotation == 270) h to w else w to h
        val out = Image(oh, ow)
        val f = frame.format
        for (r in 0 until oh) {
            for (c in 0 until ow) {
                // (r, c) of the upright image comes from (sr, sc) of the buffer
                val (sr, sc) =
                    when (frame.rotation) {
                        0 -> r to c
                        90 -> (h - 1 - c) to r
                        180 -> (h - 1 - r) to (w - 1 - c)
                        else -> c to (w - 1 - r) // 270
                    }
                val p = sr * frame.rowStride + 4 * sc
                val o = 3 * (r * ow + c)
                out.px[o] = (frame.data[p + f.r].toInt() and 0xFF).toDouble()
                out.px[o + 1] = (frame.data[p + f.g].toInt() and 0xFF).toDouble()
                out.px[o + 2] = (frame.data[p + f.b].toInt() and 0xFF).toDouble()
            }
        }
        return out
    }

    /** Step 2: shorter side to `resize_shorter` (torchvision `Resize(int)`), horizontal pass then vertical. */
    fun resize(img: Image): Image {
        val (oh, ow) = resizedSize(img.height, img.width, spec.resizeShorter)
        val horizontal = if (ow == img.width) img else resizeAxis(img, ow, horizontal = true)
        return if (oh == img.height) horizontal else resizeAxis(horizontal, oh, horizontal = false)
    }

    private fun resizeAxis(
        img: Image,
        outSize: Int,
        horizontal: Boolean,
    ): Image {
        val inSize = if (horizontal) img.width else img.height
        val co = coefficients(inSize, outSize, spec.interpolation, spec.antialias)
        val out = if (horizontal) Image(img.height, outSize) else Image(outSize, img.width)
        for (r in 0 until out.height) {
            for (c in 0 until out.width) {
                val i = if (horizontal) c else r
                val w = co.weights[i]
                for (ch in 0 until 3) {
                    var acc = 0.0
                    for (k in w.indices) {
                        val j = co.lo[i] + k
                        val at = if (horizontal) r * img.width + j else j * img.width + c // input pixel
                        acc += w[k] * img.px[3 * at + ch]
                    }
                    out.px[3 * (r * out.width + c) + ch] = acc
                }
            }
        }
        return out
    }

    /** Step 3: centre crop with torchvision's offsets (`round(d / 2)`, half to even, in integers). */
    fun centerCrop(
        img: Image,
        h: Int,
        w: Int,
    ): Image {
        require(
            h <= img.height && w <= img.width,
        ) { "crop ${h}x$w is larger than the ${img.height}x${img.width} image" }
        val top = halfEven(img.height - h)
        val left = halfEven(img.width - w)
        val out = Image(h, w)
        for (r in 0 until h) {
            System.arraycopy(img.px, 3 * ((top + r) * img.width + left), out.px, 3 * r * w, 3 * w)
        }
        return out
    }

    /** Step 4: `(pixel / value_scale - mean[c]) / std[c]`, channels in `color_order`; returns CHW planes. */
    fun normalize(img: Image): Array<DoubleArray> {
        val n = img.height * img.width
        val src = if (spec.colorOrder == ColorOrder.RGB) intArrayOf(0, 1, 2) else intArrayOf(2, 1, 0)
        return Array(3) { c ->
            DoubleArray(n) { i -> (img.px[3 * i + src[c]] / spec.valueScale - spec.mean[c]) / spec.std[c] }
        }
    }

    /** Steps 5 and 6: lay the planes out as NCHW or NHWC and cast (float32) or quantize (int8/uint8). */
    fun toTensor(
        chw: Array<DoubleArray>,
        input: TensorSpec,
    ): ModelTensor {
        val h = spec.cropHeight
        val w = spec.cropWidth
        val layout = requireNotNull(input.layout) { "model input has no layout" }
        val expected = if (layout == Layout.NCHW) listOf(1, 3, h, w) else listOf(1, h, w, 3)
        require(input.shape == expected) { "model input shape ${input.shape} != $expected for crop ${h}x$w" }
        val n = 3 * h * w
        // index in the output tensor of channel c, pixel i (= row * w + col)
        val at: (Int, Int) -> Int = if (layout == Layout.NCHW) { c, i -> c * h * w + i } else { c, i -> 3 * i + c }
        return if (input.dtype == DType.FLOAT32) {
            val out = FloatArray(n)
            for (c in 0 until 3) for (i in 0 until h * w) out[at(c, i)] = chw[c][i].toFloat()
            ModelTensor.float32(input.shape, out)
        } else {
            val q = requireNotNull(input.quant) { "a ${input.dtype.json} input needs quant" }
            val out = ByteArray(n)
            for (c in 0 until 3) for (i in 0 until h * w) out[at(c, i)] = quantize(chw[c][i], q, input.dtype).toByte()
            ModelTensor.quantized(input.dtype, input.shape, out)
        }
    }

    private fun halfEven(d: Int): Int {
        val q = d / 2
        return if (d % 2 == 1 && q % 2 == 1) q + 1 else q
    }

    /** A float64 RGB image, row-major, 3 values a pixel. */
    class Image(
        val height: Int,
        val width: Int,
    ) {
        val px = DoubleArray(3 * height * width)
    }

    companion object {
        /** Size after torchvision `Resize(shorter)`: `(height, width)`. */
        fun resizedSize(
            height: Int,
            width: Int,
            shorter: Int,
        ): Pair<Int, Int> =
            if (width <= height) {
                Pair((shorter.toLong() * height / width).toInt(), shorter)
            } else {
                Pair(shorter, (shorter.toLong() * width / height).toInt())
            }

        /**
         * `q = clamp(sign(t) * floor(|t| + 0.5) + zero_point, min, max)` with `t = x / scale`: TFLite's quantize,
         * rounding half away from zero, written as bundle.md writes it so int8 inputs match bit for bit.
         */
        fun quantize(
            x: Double,
            q: Quant,
            dtype: DType,
        ): Int {
            val t = x / q.scale
            val rounded = Math.signum(t) * floor(abs(t) + 0.5) // not Math.round: that rounds -2.5 to -2
            return min(max(rounded + q.zeroPoint, dtype.min.toDouble()), dtype.max.toDouble()).toInt()
        }

        /**
         * PIL's `precompute_coeffs` as bundle.md writes it (multiplying by `1 / fs`, as PIL does): for output
         * index i, the normalised weights of inputs `lo[i]`, `lo[i] + 1`, ...
         */
        fun coefficients(
            inSize: Int,
            outSize: Int,
            interpolation: Interpolation,
            antialias: Boolean,
        ): Coefficients {
            val s = inSize.toDouble() / outSize
            val fs = if (antialias && s > 1.0) s else 1.0
            val invFs = 1.0 / fs
            val support = (if (interpolation == Interpolation.BILINEAR) 1.0 else 2.0) * fs
            val lo = IntArray(outSize)
            val weights =
                Array(outSize) { i ->
                    val center = (i + 0.5) * s
                    val first = max(truncate(center - support + 0.5).toInt(), 0)
                    val last = min(truncate(center + support + 0.5).toInt(), inSize)
                    lo[i] = first
                    val w =
                        DoubleArray(
                            max(last - first, 0),
                        ) { k -> filter(((first + k) - center + 0.5) * invFs, interpolation) }
                    var sum = 0.0
                    for (x in w) sum += x
                    if (sum != 0.0) for (k in w.indices) w[k] /= sum
                    w
                }
            return Coefficients(lo, weights)
        }

        private fun filter(
            x0: Double,
            interpolation: Interpolation,
        ): Double {
            val x = abs(x0)
            return when (interpolation) {
                Interpolation.BILINEAR -> {
                    if (x < 1.0) 1.0 - x else 0.0
                }

                Interpolation.BICUBIC -> {
                    val a = -0.5
                    when {
                        x < 1.0 -> ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                        x < 2.0 -> (((x - 5.0) * x + 8.0) * x - 4.0) * a
                        else -> 0.0
                    }
                }
            }
        }
    }

    /** Resampling weights: output index i takes inputs `lo[i] until lo[i] + weights[i].size`. */
    class Coefficients(
        val lo: IntArray,
        val weights: Array<DoubleArray>,
    )
}
