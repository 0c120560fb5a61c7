package dev.edgevit.core

import org.json.JSONArray
import org.json.JSONObject
import java.io.File

/** Small hand-made inputs for the unit tests (the golden cases come from `edgevit bundle`). */
object Fixtures {
    /** A valid bundle.json document: 3 classes, crop 2x3 after resize_shorter 2, one NCHW fp32 model. */
    fun bundleJson(): JSONObject =
        JSONObject(
            """
            {"format": "edgevit-bundle", "version": 1, "platform": "android", "model_name": "tiny",
             "classes": ["a", "b", "c"],
             "preprocess": {"color_order": "RGB", "value_scale": 255.0, "mean": [0.5, 0.25, 0.0],
                            "std": [0.5, 0.25, 1.0], "resize_shorter": 2, "interpolation": "bilinear",
                            "antialias": true, "crop": [2, 2]},
             "models": [
               {"key": "executorch_fp32", "file": "models/executorch_fp32.pte", "backend": "executorch",
                "precision": "fp32", "sha256": "${"0".repeat(64)}",
                "input": {"name": "image", "dtype": "float32", "layout": "NCHW", "shape": [1, 3, 2, 2], "quant": null},
                "output": {"name": "logits", "dtype": "float32", "shape": [1, 3], "quant": null}},
               {"key": "tflite_int8", "file": "models/tflite_int8.tflite", "backend": "tflite",
                "precision": "int8", "sha256": "${"a".repeat(64)}",
                "input": {"name": "image", "dtype": "int8", "layout": "NHWC", "shape": [1, 2, 2, 3],
                          "quant": {"scale": 0.0078125, "zero_point": -3}},
                "output": {"name": "logits", "dtype": "int8", "shape": [1, 3],
                           "quant": {"scale": 0.5, "zero_point": 4}}}
             ]}
            """.trimIndent(),
        )

    /** Follows a key path like `models[1].input.quant` to the object holding its last key; returns (holder, key). */
    fun locate(
        root: JSONObject,
        path: String,
    ): Pair<JSONObject, String> {
        val parts = path.split('.')
        var cur: Any = root
        for (part in parts.dropLast(1)) cur = step(cur, part)
        val last = parts.last()
        return cur as JSONObject to last
    }

    private fun step(
        cur: Any,
        part: String,
    ): Any {
        val m = Regex("""(\w+)(?:\[(\d+)])?""").matchEntire(part) ?: error("bad path part $part")
        val v = (cur as JSONObject).get(m.groupValues[1])
        return if (m.groupValues[2].isEmpty()) v else (v as JSONArray).get(m.groupValues[2].toInt())
    }

    /** The bundle.json text with the value at [path] replaced by [value] (or removed when [value] is null). */
    fun bundleWith(
        path: String,
        value: Any?,
    ): String {
        val root = bundleJson()
        val (holder, key) = locate(root, path)
        if (value == null) holder.remove(key) else holder.put(key, value)
        return root.toString()
    }

    /** An RGBA frame whose pixel (r, c) of a [height] x [width] buffer has R = 10r + c, G = 100 + R, B = 200 + R. */
    fun numberedFrame(
        width: Int,
        height: Int,
        rotation: Int = 0,
        format: PixelFormat = PixelFormat.RGBA_8888,
        padding: Int = 0,
    ): Frame {
        val stride = 4 * width + padding
        val data = ByteArray(stride * height) { 0x5A } // padding bytes hold garbage
        for (r in 0 until height) {
            for (c in 0 until width) {
                val v = 10 * r + c
                val p = r * stride + 4 * c
                // byte offsets written out, not taken from PixelFormat: the test must not share the code it tests
                val (ri, bi) = if (format == PixelFormat.RGBA_8888) 0 to 2 else 2 to 0
                data[p + ri] = v.toByte()
                data[p + 1] = (100 + v).toByte()
                data[p + bi] = (200 + v).toByte()
                data[p + 3] = 0x33 // alpha is ignored
            }
        }
        return Frame(data, width, height, stride, format, rotation)
    }

    /** The bundle folder the golden tests read: `-Dedgevit.bundle`, else `$EDGEVIT_BUNDLE`. */
    fun bundleDir(): File {
        val dir =
            System.getProperty("edgevit.bundle")?.takeIf { it.isNotBlank() }
                ?: System.getenv("EDGEVIT_BUNDLE")?.takeIf { it.isNotBlank() }
                ?: error(
                    "no app bundle for the golden tests: make one with `edgevit bundle RUN --platform android " +
                        "--out DIR` and pass it as EDGEVIT_BUNDLE=DIR (or -Dedgevit.bundle=DIR / -Pedgevit.bundle=DIR)",
                )
        val f = File(dir)
        check(File(f, "bundle.json").isFile) { "$f has no bundle.json (EDGEVIT_BUNDLE must be an app bundle folder)" }
        return f
    }
}
