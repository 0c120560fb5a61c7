package dev.edgevit.core

import java.io.File

/** Golden cases written by `edgevit bundle` (bundle.md, "Golden cases"): `DIR/cases.json` and its files. */
class GoldenCases(
    val dir: File,
    val topK: Int,
    val cases: List<GoldenCase>,
) {
    companion object {
        const val VERSION = 1

        /**
         * Reads `dir/cases.json` (not the buffers: see [GoldenCase.frame]).
         *
         * @throws BundleFormatException naming the key for a missing key, a wrong type or an unknown version.
         */
        fun load(dir: File): GoldenCases {
            val file = File(dir, "cases.json")
            if (!file.isFile) throw BundleFormatException("cases.json", "not found in $dir")
            val root = Json.obj(file.readText(), "cases.json")
            val version = root.int("version")
            if (version != VERSION) root.fail("version", "$version is not a cases version this reads ($VERSION)")
            val topK = root.int("top_k")
            if (topK < 1) root.fail("top_k", "$topK must be >= 1")
            val arr = root.array("cases")
            val cases = List(arr.size) { GoldenCase.parse(arr.obj(it)) }
            cases.groupBy { it.id }.filterValues { it.size > 1 }.keys.firstOrNull()?.let {
                root.fail("cases", "id '$it' is used twice")
            }
            return GoldenCases(dir, topK, cases)
        }
    }
}

/**
 * What `edgevit bundle` computed for one case and one model, in Python: the input tensor file, the logits (for
 * an integer output, dequantised [rawOutput]), and the top-k. Every field is optional for the golden runner.
 */
class GoldenExpectation(
    val inputFile: String?,
    val logits: DoubleArray?,
    val rawOutput: IntArray?,
    val topK: List<Scored>?,
) {
    /**
     * The logits the pipeline's softmax/top-k start from: [rawOutput] dequantised with [model]'s output quant when
     * present, else [logits]; null when the case has neither.
     *
     * @throws BundleFormatException when their count differs from the model's classes or [rawOutput] is given for
     *   a float output (names the key under [path]).
     */
    fun logitsFor(
        model: ModelSpec,
        path: String,
    ): DoubleArray? {
        val k = model.output.size
        rawOutput?.let { raw ->
            if (raw.size != k) throw BundleFormatException("$path.raw_output", "has ${raw.size} values, expected $k")
            if (model.output.quant == null) {
                throw BundleFormatException("$path.raw_output", "given for the float output of ${model.key}")
            }
            val dtype = model.output.dtype
            val data = ByteArray(k) { raw[it].toByte() }
            raw.forEachIndexed { i, v ->
                if (v !in
                    dtype.min..dtype.max
                ) {
                    throw BundleFormatException("$path.raw_output[$i]", "$v is not ${dtype.json}")
                }
            }
            return Postprocess.logits(ModelTensor.quantized(dtype, model.output.shape, data), model.output)
        }
        logits?.let {
            if (it.size !=
                k
            ) {
                throw BundleFormatException("$path.logits", "has ${it.size} values, expected $k")
            }
        }
        return logits
    }
}

/** One raw buffer, how to read it, and the expected results per model key. */
class GoldenCase(
    val id: String,
    val buffer: String,
    val width: Int,
    val height: Int,
    val rowStride: Int,
    val pixelFormat: PixelFormat,
    val rotation: Int,
    val expected: Map<String, GoldenExpectation>,
) {
    /** The case's frame, its buffer read from [dir]. */
    fun frame(dir: File): Frame {
        val f = File(dir, buffer)
        if (!f.isFile) throw BundleFormatException("cases[$id].buffer", "$buffer not found in $dir")
        val bytes = f.readBytes()
        val need = rowStride.toLong() * (height - 1) + 4L * width
        if (bytes.size < need) {
            throw BundleFormatException("cases[$id].buffer", "$buffer has ${bytes.size} bytes, needs $need")
        }
        return Frame(bytes, width, height, rowStride, pixelFormat, rotation)
    }

    companion object {
        internal fun parse(o: Json.Obj): GoldenCase {
            val width = o.int("width")
            val height = o.int("height")
            if (width < 1 || height < 1) o.fail("width", "${width}x$height must be positive")
            val stride = o.int("row_stride")
            if (stride < 4 * width) o.fail("row_stride", "$stride is less than 4 * width (${4 * width})")
            val rotation = o.int("rotation")
            if (rotation !in Frame.ROTATIONS) o.fail("rotation", "$rotation is not one of ${Frame.ROTATIONS}")
            val expected = o.optObj("expected")
            val byModel =
                expected?.keys()?.associateWith { key ->
                    val e = expected.obj(key)
                    val logits =
                        if (e.isNull("logits")) {
                            null
                        } else {
                            e.array("logits").let { a ->
                                DoubleArray(a.size) { a.double(it) }
                            }
                        }
                    val raw =
                        if (e.isNull("raw_output")) {
                            null
                        } else {
                            e.array("raw_output").let { a ->
                                IntArray(a.size) { a.int(it) }
                            }
                        }
                    val top =
                        if (e.isNull("top_k")) {
                            null
                        } else {
                            e.array("top_k").let { a ->
                                List(a.size) {
                                    val pair = a.array(it)
                                    if (pair.size !=
                                        2
                                    ) {
                                        throw BundleFormatException("${pair.path}", "must be [index, probability]")
                                    }
                                    Scored(pair.int(0), pair.double(1))
                                }
                            }
                        }
                    GoldenExpectation(e.optString("input"), logits, raw, top)
                } ?: emptyMap()
            return GoldenCase(
                id = o.string("id"),
                buffer = o.string("buffer"),
                width = width,
                height = height,
                rowStride = stride,
                pixelFormat = o.enum("pixel_format", PixelFormat.entries) { it.json },
                rotation = rotation,
                expected = byModel,
            )
        }
    }
}
