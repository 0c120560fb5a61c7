package dev.edgevit.core

/** Builds [Frame]s from what Android hands an app, so the app layer only copies fields across. */
object Frames {
    /**
     * A CameraX `ImageAnalysis` frame taken with `OUTPUT_IMAGE_FORMAT_RGBA_8888`: one plane of RGBA bytes.
     *
     * @param bytes the plane's bytes from its first row (`plane.buffer`).
     * @param rowStride `plane.rowStride`; [pixelStride] `plane.pixelStride` (must be 4).
     * @param rotationDegrees `imageInfo.rotationDegrees`: the clockwise rotation that makes the frame upright.
     * @throws IllegalArgumentException for a pixel stride other than 4 or a rotation not a multiple of 90.
     */
    fun fromCamera(
        bytes: ByteArray,
        width: Int,
        height: Int,
        rowStride: Int,
        pixelStride: Int,
        rotationDegrees: Int,
    ): Frame {
        require(pixelStride == 4) { "pixel stride $pixelStride: ImageAnalysis must output RGBA_8888 (4 bytes a pixel)" }
        return Frame(bytes, width, height, rowStride, PixelFormat.RGBA_8888, normalizeRotation(rotationDegrees))
    }

    /**
     * A decoded photo: the bytes of an `ARGB_8888` Bitmap's `copyPixelsToBuffer` (R,G,B,A in memory, rows of
     * `bitmap.rowBytes` bytes) and the photo's EXIF orientation tag.
     */
    fun fromBitmapPixels(
        bytes: ByteArray,
        width: Int,
        height: Int,
        rowBytes: Int,
        exifOrientation: Int,
    ): Frame = Frame(bytes, width, height, rowBytes, PixelFormat.RGBA_8888, rotationForExif(exifOrientation))

    /**
     * The clockwise rotation that makes a photo upright from its EXIF orientation tag (1 normal, 6 rotate 90,
     * 3 rotate 180, 8 rotate 270). The mirrored tags 2, 4, 5, 7 are taken as their rotation without the mirror
     * (the spec has no mirror); 0 or unknown values mean upright.
     */
    fun rotationForExif(orientation: Int): Int =
        when (orientation) {
            6, 7 -> 90
            3, 4 -> 180
            8, 5 -> 270
            else -> 0
        }

    /** [degrees] as one of 0, 90, 180, 270 (e.g. -90 -> 270, 450 -> 90). */
    fun normalizeRotation(degrees: Int): Int {
        require(degrees % 90 == 0) { "rotation $degrees is not a multiple of 90" }
        return ((degrees % 360) + 360) % 360
    }
}
