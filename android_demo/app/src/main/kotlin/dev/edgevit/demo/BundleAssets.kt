package dev.edgevit.demo

import android.content.Context
import dev.edgevit.core.Bundle
import dev.edgevit.core.GoldenCases
import dev.edgevit.core.ModelSpec
import java.io.File
import java.io.IOException
import java.security.MessageDigest

/**
 * The bundle the build copied into `assets/bundle/` (app/build.gradle.kts, task copyEdgeVitBundle*). Model files
 * are copied out of the APK once, because ExecuTorch and LiteRT load a model from a file path, and checked against
 * the sha256 that bundle.json records.
 */
object BundleAssets {
    private const val ROOT = "bundle"

    /** Parses `assets/bundle/bundle.json`; throws [dev.edgevit.core.BundleFormatException] naming a bad key. */
    fun load(context: Context): Bundle =
        context.assets.open("$ROOT/bundle.json").use { Bundle.parse(it.readBytes().decodeToString()) }

    /**
     * The model file of [model], copied from the assets into the app's files on first use.
     *
     * @throws IOException when it is not in the assets or its sha256 differs from bundle.json's.
     */
    fun modelFile(
        context: Context,
        model: ModelSpec,
    ): File {
        val dest = File(context.filesDir, "$ROOT/${model.file}")
        if (!dest.isFile || sha256(dest) != model.sha256) {
            copyAsset(context, "$ROOT/${model.file}", dest)
            val got = sha256(dest)
            if (got != model.sha256) {
                dest.delete()
                throw IOException("${model.file}: sha256 $got does not match bundle.json's ${model.sha256}")
            }
        }
        return dest
    }

    /** Copies `assets/bundle/golden/` into the cache and reads its cases.json (instrumented tests). */
    fun goldenCases(context: Context): GoldenCases {
        val dir = File(context.cacheDir, "$ROOT/golden")
        val names = context.assets.list("$ROOT/golden").orEmpty()
        if (names.isEmpty()) throw IOException("the bundle in the assets has no golden/ cases")
        for (name in names) copyAsset(context, "$ROOT/golden/$name", File(dir, name))
        return GoldenCases.load(dir)
    }

    private fun copyAsset(
        context: Context,
        asset: String,
        dest: File,
    ) {
        dest.parentFile?.mkdirs()
        val tmp = File(dest.parentFile, ".${dest.name}.tmp")
        try {
            context.assets.open(asset).use { input -> tmp.outputStream().use { input.copyTo(it) } }
        } catch (e: IOException) {
            tmp.delete()
            throw IOException("$asset is not in the app's assets (was the bundle copied? see README.md)", e)
        }
        if (!tmp.renameTo(dest)) throw IOException("could not move $tmp to $dest")
    }

    private fun sha256(file: File): String {
        val md = MessageDigest.getInstance("SHA-256")
        file.inputStream().use { input ->
            val buf = ByteArray(1 shl 16)
            while (true) {
                val n = input.read(buf)
                if (n < 0) break
                md.update(buf, 0, n)
            }
        }
        return md.digest().joinToString("") { "%02x".format(it) }
    }
}
