package dev.edgevit.core

import org.json.JSONArray
import org.json.JSONException
import org.json.JSONObject
import java.io.File

/**
 * A bundle that `edgevit bundle` wrote: the models an app ships and the evaluation transform they expect
 * (docs/reference/bundle.md, `bundle.json` version 1).
 */
data class Bundle(
    val platform: Platform,
    val modelName: String,
    val classes: List<String>,
    val preprocess: PreprocessSpec,
    val models: List<ModelSpec>,
) {
    /** The model whose `key` is [key]; throws [BundleFormatException] naming `models` when there is none. */
    fun model(key: String): ModelSpec =
        models.firstOrNull { it.key == key }
            ?: throw BundleFormatException("models", "no model with key '$key' (have ${models.map { it.key }})")

    companion object {
        const val FORMAT = "edgevit-bundle"
        const val VERSION = 1

        /**
         * Reads `DIR/bundle.json`.
         *
         * @param dir the bundle folder.
         * @return the parsed bundle; model paths stay relative to [dir].
         * @throws BundleFormatException when the file is missing or does not follow bundle.md (names the key).
         */
        fun load(dir: File): Bundle {
            val file = File(dir, "bundle.json")
            if (!file.isFile) throw BundleFormatException("bundle.json", "not found in $dir (run `edgevit bundle`)")
            return parse(file.readText())
        }

        /**
         * Parses the text of a `bundle.json`.
         *
         * @throws BundleFormatException for a missing key, a wrong type, an unknown format/version/enum value, or
         *   a `classes` count that differs from a model's output size; the message starts with the key path.
         */
        fun parse(text: String): Bundle {
            val root = Json.obj(text, "bundle.json")
            val format = root.string("format")
            if (format != FORMAT) root.fail("format", "'$format' is not '$FORMAT'")
            val version = root.int("version")
            if (version != VERSION) {
                root.fail("version", "$version is not supported (this app reads version $VERSION)")
            }
            val platform = root.enum("platform", Platform.entries) { it.json }
            val classesArr = root.array("classes")
            if (classesArr.size == 0) root.fail("classes", "must be a non-empty list of strings")
            val classes = List(classesArr.size) { classesArr.string(it) }
            val preprocess = PreprocessSpec.parse(root.obj("preprocess"))
            val modelsArr = root.array("models")
            val models = mutableListOf<ModelSpec>()
            for (i in 0 until modelsArr.size) {
                val m = ModelSpec.parse(modelsArr.obj(i), preprocess, classes.size)
                if (models.any { it.key == m.key }) {
                    throw BundleFormatException("models[$i].key", "'${m.key}' is used twice")
                }
                models += m
            }
            if (models.isEmpty()) root.fail("models", "must list at least one model")
            return Bundle(platform, root.string("model_name"), classes, preprocess, models)
        }
    }
}

/** Raised for a `bundle.json` or `cases.json` that does not follow bundle.md; [key] is the offending key path. */
class BundleFormatException(
    val key: String,
    message: String,
) : IllegalArgumentException("$key: $message")

enum class Platform(
    val json: String,
) {
    ANDROID("android"),
    IOS("ios"),
}

enum class Backend(
    val json: String,
) {
    EXECUTORCH("executorch"),
    TFLITE("tflite"),
    COREML("coreml"),
}

/** Element type of a model input or output. */
enum class DType(
    val json: String,
    val min: Int,
    val max: Int,
) {
    FLOAT32("float32", 0, 0),
    INT8("int8", -128, 127),
    UINT8("uint8", 0, 255),
    ;

    val isQuantized: Boolean get() = this != FLOAT32
}

enum class Layout(
    val json: String,
) {
    NCHW("NCHW"),
    NHWC("NHWC"),
}

enum class ColorOrder(
    val json: String,
) {
    RGB("RGB"),
    BGR("BGR"),
}

enum class Interpolation(
    val json: String,
) {
    BILINEAR("bilinear"),
    BICUBIC("bicubic"),
}

/** Affine quantization: real = (q - zeroPoint) * scale. */
data class Quant(
    val scale: Double,
    val zeroPoint: Int,
)

/** The evaluation transform (bundle.md "preprocess"). */
data class PreprocessSpec(
    val colorOrder: ColorOrder,
    val valueScale: Double,
    val mean: List<Double>,
    val std: List<Double>,
    val resizeShorter: Int,
    val interpolation: Interpolation,
    val antialias: Boolean,
    val cropHeight: Int,
    val cropWidth: Int,
) {
    companion object {
        internal fun parse(o: Json.Obj): PreprocessSpec {
            val mean = o.doubles("mean", 3)
            val std = o.doubles("std", 3)
            std.forEachIndexed { i, s -> if (!(s > 0.0)) o.fail("std", "std[$i] = $s must be > 0") }
            val valueScale = o.double("value_scale")
            if (!(valueScale > 0.0)) o.fail("value_scale", "$valueScale must be > 0")
            val shorter = o.int("resize_shorter")
            if (shorter < 1) o.fail("resize_shorter", "$shorter must be >= 1")
            val crop = o.ints("crop", 2)
            if (crop.any { it < 1 }) o.fail("crop", "${crop.toList()} must be positive")
            if (crop.any { it > shorter }) {
                o.fail("crop", "${crop.toList()} is larger than resize_shorter $shorter (the crop would need padding)")
            }
            return PreprocessSpec(
                colorOrder = o.enum("color_order", ColorOrder.entries) { it.json },
                valueScale = valueScale,
                mean = mean.toList(),
                std = std.toList(),
                resizeShorter = shorter,
                interpolation = o.enum("interpolation", Interpolation.entries) { it.json },
                antialias = o.bool("antialias"),
                cropHeight = crop[0],
                cropWidth = crop[1],
            )
        }
    }
}

/**
 * A model input or output: [name] (the Core ML feature name; informative elsewhere), dtype, shape, layout (inputs
 * only) and quantization (exactly for int8/uint8).
 */
data class TensorSpec(
    val name: String,
    val dtype: DType,
    val shape: List<Int>,
    val layout: Layout?,
    val quant: Quant?,
) {
    val size: Int get() = shape.fold(1) { a, b -> a * b }
}

/** One shipped model file (bundle.md "models[i]"). */
data class ModelSpec(
    val key: String,
    val file: String,
    val backend: Backend,
    val precision: String,
    val sha256: String,
    val input: TensorSpec,
    val output: TensorSpec,
) {
    companion object {
        private val KEY = Regex("[A-Za-z0-9_]+")
        private val SHA256 = Regex("[0-9a-f]{64}")
        val PRECISIONS = listOf("fp32", "fp16", "int8")

        internal fun parse(
            o: Json.Obj,
            pre: PreprocessSpec,
            numClasses: Int,
        ): ModelSpec {
            val key = o.string("key")
            if (!KEY.matches(key)) o.fail("key", "'$key' must match [A-Za-z0-9_]+")
            val file = o.string("file")
            if (file.isEmpty() || file.startsWith("/") || "\\" in file || file.split('/').any { it == ".." }) {
                o.fail("file", "'$file' must be a relative POSIX path inside the bundle")
            }
            val sha = o.string("sha256")
            if (!SHA256.matches(sha)) o.fail("sha256", "must be 64 lowercase hex digits")
            val inObj = o.obj("input")
            val outObj = o.obj("output")
            val input = parseTensor(inObj, withLayout = true)
            val output = parseTensor(outObj, withLayout = false)
            val expected =
                when (input.layout!!) {
                    Layout.NCHW -> listOf(1, 3, pre.cropHeight, pre.cropWidth)
                    Layout.NHWC -> listOf(1, pre.cropHeight, pre.cropWidth, 3)
                }
            if (input.shape != expected) {
                inObj.fail(
                    "shape",
                    "${input.shape} is not $expected (${input.layout.json}, crop ${pre.cropHeight}x${pre.cropWidth})",
                )
            }
            if (output.shape != listOf(1, numClasses)) {
                outObj.fail("shape", "${output.shape} does not match the $numClasses entries of 'classes'")
            }
            val precision = o.string("precision")
            if (precision !in PRECISIONS) o.fail("precision", "'$precision' is not one of $PRECISIONS")
            return ModelSpec(
                key = key,
                file = file,
                backend = o.enum("backend", Backend.entries) { it.json },
                precision = precision,
                sha256 = sha,
                input = input,
                output = output,
            )
        }

        private fun parseTensor(
            o: Json.Obj,
            withLayout: Boolean,
        ): TensorSpec {
            val dtype = o.enum("dtype", DType.entries) { it.json }
            val layout = if (withLayout) o.enum("layout", Layout.entries) { it.json } else null
            val shapeArr = o.array("shape")
            val shape = List(shapeArr.size) { shapeArr.int(it) }
            if (shape.isEmpty() || shape.any { it < 1 }) o.fail("shape", "$shape must be positive integers")
            if (!o.has("quant")) o.fail("quant", "missing required key (null for a float tensor)")
            val quant =
                if (o.isNull("quant")) {
                    if (dtype.isQuantized) o.fail("quant", "a ${dtype.json} tensor needs {scale, zero_point}")
                    null
                } else {
                    if (!dtype.isQuantized) o.fail("quant", "must be null for a ${dtype.json} tensor")
                    val q = o.obj("quant")
                    val scale = q.double("scale")
                    val zero = q.int("zero_point")
                    if (!(scale > 0.0)) q.fail("scale", "$scale must be > 0")
                    if (zero !in dtype.min..dtype.max) {
                        q.fail("zero_point", "$zero is outside ${dtype.json}'s range ${dtype.min}..${dtype.max}")
                    }
                    Quant(scale, zero)
                }
            return TensorSpec(o.string("name"), dtype, shape, layout, quant)
        }
    }
}

/**
 * Strict JSON access that names the key path of every error (org.json alone coerces types and says
 * "JSONObject["x"] not found" without the path).
 */
internal object Json {
    fun obj(
        text: String,
        what: String,
    ): Obj =
        try {
            Obj(JSONObject(text), "")
        } catch (e: JSONException) {
            throw BundleFormatException(what, "is not valid JSON (${e.message})")
        }

    private fun join(
        path: String,
        key: String,
    ) = if (path.isEmpty()) key else "$path.$key"

    class Obj(
        private val o: JSONObject,
        val path: String,
    ) {
        fun fail(
            key: String,
            message: String,
        ): Nothing = throw BundleFormatException(join(path, key), message)

        private fun raw(key: String): Any {
            if (!o.has(key)) fail(key, "missing required key")
            val v = o.get(key)
            if (v == JSONObject.NULL) fail(key, "must not be null")
            return v
        }

        fun has(key: String): Boolean = o.has(key)

        fun isNull(key: String): Boolean = !o.has(key) || o.isNull(key)

        fun string(key: String): String = raw(key) as? String ?: fail(key, "must be a string")

        fun optString(key: String): String? = if (isNull(key)) null else string(key)

        fun bool(key: String): Boolean = raw(key) as? Boolean ?: fail(key, "must be true or false")

        fun double(key: String): Double {
            val v = raw(key) as? Number ?: fail(key, "must be a number")
            return v.toDouble().also { if (!it.isFinite()) fail(key, "must be finite") }
        }

        fun int(key: String): Int = asInt(raw(key)) ?: fail(key, "must be an integer")

        fun obj(key: String): Obj = Obj(raw(key) as? JSONObject ?: fail(key, "must be an object"), join(path, key))

        fun array(key: String): Arr = Arr(raw(key) as? JSONArray ?: fail(key, "must be an array"), join(path, key))

        fun optObj(key: String): Obj? = if (isNull(key)) null else obj(key)

        fun keys(): List<String> = o.keys().asSequence().toList()

        fun doubles(
            key: String,
            n: Int,
        ): DoubleArray {
            val a = array(key)
            if (a.size != n) fail(key, "must have $n numbers, has ${a.size}")
            return DoubleArray(n) { a.double(it) }
        }

        fun ints(
            key: String,
            n: Int,
        ): IntArray {
            val a = array(key)
            if (a.size != n) fail(key, "must have $n integers, has ${a.size}")
            return IntArray(n) { a.int(it) }
        }

        fun <E> enum(
            key: String,
            values: List<E>,
            name: (E) -> String,
        ): E {
            val s = string(key)
            return values.firstOrNull { name(it) == s }
                ?: fail(key, "'$s' is not one of ${values.map(name)}")
        }
    }

    class Arr(
        private val a: JSONArray,
        val path: String,
    ) {
        val size: Int get() = a.length()

        private fun fail(
            i: Int,
            message: String,
        ): Nothing = throw BundleFormatException("$path[$i]", message)

        private fun raw(i: Int): Any = a.get(i).also { if (it == JSONObject.NULL) fail(i, "must not be null") }

        fun string(i: Int): String = raw(i) as? String ?: fail(i, "must be a string")

        fun double(i: Int): Double {
            val v = raw(i) as? Number ?: fail(i, "must be a number")
            return v.toDouble().also { if (!it.isFinite()) fail(i, "must be finite") }
        }

        fun int(i: Int): Int = asInt(raw(i)) ?: fail(i, "must be an integer")

        fun obj(i: Int): Obj = Obj(raw(i) as? JSONObject ?: fail(i, "must be an object"), "$path[$i]")

        fun array(i: Int): Arr = Arr(raw(i) as? JSONArray ?: fail(i, "must be an array"), "$path[$i]")
    }

    /** An integral JSON number as Int, or null (1.5, "1", 2^40 are not ints). */
    private fun asInt(v: Any): Int? =
        when (v) {
            is Int -> {
                v
            }

            is Long -> {
                if (v in Int.MIN_VALUE..Int.MAX_VALUE) v.toInt() else null
            }

            is Number -> {
                v.toDouble().let { d ->
                    if (d == Math.rint(d) &&
                        kotlin.math.abs(d) < 2e9
                    ) {
                        d.toInt()
                    } else {
                        null
                    }
                }
            }

            else -> {
                null
            }
        }
}
