package dev.edgevit.core

import org.json.JSONArray
import org.json.JSONObject
import java.io.File
import java.nio.file.Files
import java.nio.file.StandardCopyOption
import kotlin.system.exitProcess

/**
 * The golden runner of bundle.md: `--bundle DIR --cases DIR --out FILE.json`.
 *
 * For every case and every model of the bundle it writes the input tensor this core computes to
 * `<case>__<model>.out.bin` next to FILE.json, and into FILE.json the top-k of the case's expected `raw_output`
 * (dequantised) or `logits` when it has them, else `[]`. It never opens a model file. `edgevit app-check android`
 * compares both with the NumPy reference.
 */
object GoldenRunner {
    const val NAME = "kotlin-core 0.1.0"

    /**
     * Runs the cases and writes the results.
     *
     * @return the number of (case, model) results written.
     * @throws BundleFormatException for a malformed bundle or cases file (names the key).
     */
    fun run(
        bundleDir: File,
        casesDir: File,
        out: File,
    ): Int {
        val bundle = Bundle.load(bundleDir)
        val cases = GoldenCases.load(casesDir)
        val outDir = out.absoluteFile.parentFile.also { it.mkdirs() }
        val pre = Preprocessor(bundle.preprocess)
        val results = JSONArray()
        for (case in cases.cases) {
            val frame = case.frame(casesDir)
            for (model in bundle.models) {
                val tensor = pre.run(frame, model.input)
                val name = "${case.id}__${model.key}.out.bin"
                writeAtomic(File(outDir, name), tensor.toLittleEndian())
                val r = JSONObject().put("id", case.id).put("model", model.key).put("input_file", name)
                val path = "cases.json: ${case.id}.expected.${model.key}"
                val z = case.expected[model.key]?.logitsFor(model, path)
                val top = if (z == null) emptyList() else Postprocess.topK(z, cases.topK)
                r.put("top_k", JSONArray(top.map { JSONArray().put(it.index).put(it.probability) }))
                results.put(r)
            }
        }
        val doc = JSONObject().put("runner", NAME).put("results", results)
        writeAtomic(out, (doc.toString(1) + "\n").toByteArray())
        return results.length()
    }

    /** Writes [bytes] to a temporary file beside [file], then renames it over [file]. */
    fun writeAtomic(
        file: File,
        bytes: ByteArray,
    ) {
        val tmp = File(file.absoluteFile.parentFile, ".${file.name}.tmp")
        tmp.writeBytes(bytes)
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE)
    }

    private const val USAGE = "usage: run-golden --bundle DIR --cases DIR --out FILE.json"

    @JvmStatic
    fun main(args: Array<String>) {
        val opts = mutableMapOf<String, String>()
        var i = 0
        while (i < args.size) {
            val a = args[i]
            if (a == "-h" || a == "--help") {
                println(USAGE)
                return
            }
            if (a !in setOf("--bundle", "--cases", "--out") || i + 1 >= args.size) {
                System.err.println("error: unexpected argument '$a'\n$USAGE")
                exitProcess(2)
            }
            opts[a] = args[i + 1]
            i += 2
        }
        val missing = listOf("--bundle", "--cases", "--out").filter { it !in opts }
        if (missing.isNotEmpty()) {
            System.err.println("error: missing ${missing.joinToString()}\n$USAGE")
            exitProcess(2)
        }
        try {
            val n = run(File(opts["--bundle"]!!), File(opts["--cases"]!!), File(opts["--out"]!!))
            println("$NAME: wrote $n results to ${opts["--out"]}")
        } catch (e: IllegalArgumentException) {
            System.err.println("error: ${e.message}")
            exitProcess(1)
        }
    }
}
