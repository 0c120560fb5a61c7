package dev.edgevit.demo

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.net.Uri
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.ImageProxy
import androidx.exifinterface.media.ExifInterface
import dev.edgevit.core.Frame
import dev.edgevit.core.Frames
import java.io.IOException
import java.nio.ByteBuffer

/**
 * A CameraX analyzer for `ImageAnalysis` built with `OUTPUT_IMAGE_FORMAT_RGBA_8888`: hands each frame, with its
 * row stride and `rotationDegrees`, to [onFrame] on the analysis thread. The core rotates it upright.
 */
class RgbaAnalyzer(
    private val onFrame: (Frame) -> Unit,
) : ImageAnalysis.Analyzer {
    override fun analyze(image: ImageProxy) {
        image.use {
            val plane = it.planes[0]
            val buffer = plane.buffer.duplicate().apply { rewind() }
            val bytes = ByteArray(buffer.remaining())
            buffer.get(bytes)
            onFrame(
                Frames.fromCamera(
                    bytes,
                    it.width,
                    it.height,
                    plane.rowStride,
                    plane.pixelStride,
                    it.imageInfo.rotationDegrees,
                ),
            )
        }
    }
}

/** Decodes photos from the Photo Picker into frames. */
object PhotoFrames {
    /**
     * The photo at [uri] as an RGBA frame with its EXIF rotation, decoded at a power-of-two reduction that keeps
     * its shorter side at least [minShorter] pixels (a 12 MP photo would otherwise need ~300 MB in the float64
     * pipeline). Decoding is the platform's: only what follows it is verified against Python.
     *
     * @return the frame and an upright thumbnail-sized bitmap for display.
     * @throws IOException when the photo cannot be read or decoded.
     */
    fun load(
        context: Context,
        uri: Uri,
        minShorter: Int,
    ): Pair<Frame, Bitmap> {
        val resolver = context.contentResolver
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, bounds) }
            ?: throw IOException("cannot open $uri")
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IOException("$uri is not an image Android can decode")
        var sample = 1
        while (minOf(bounds.outWidth, bounds.outHeight) / (sample * 2) >= maxOf(minShorter, 1) * 2) sample *= 2
        val opts =
            BitmapFactory.Options().apply {
                inSampleSize = sample
                inPreferredConfig = Bitmap.Config.ARGB_8888
            }
        val bitmap =
            resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, opts) }
                ?: throw IOException("cannot decode $uri")
        val orientation =
            resolver.openInputStream(uri)?.use {
                ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
            } ?: ExifInterface.ORIENTATION_NORMAL
        val argb = if (bitmap.config == Bitmap.Config.ARGB_8888) bitmap else bitmap.copy(Bitmap.Config.ARGB_8888, false)
        val pixels = ByteBuffer.allocate(argb.rowBytes * argb.height)
        argb.copyPixelsToBuffer(pixels) // ARGB_8888 is R, G, B, A in memory
        val frame = Frames.fromBitmapPixels(pixels.array(), argb.width, argb.height, argb.rowBytes, orientation)
        return frame to argb
    }
}
