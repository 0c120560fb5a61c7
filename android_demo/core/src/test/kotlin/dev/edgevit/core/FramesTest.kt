package dev.edgevit.core

import org.junit.jupiter.params.ParameterizedTest
import org.junit.jupiter.params.provider.CsvSource
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith

class FramesTest {
    @Test
    fun cameraFrameIsRgbaWithItsRotationAndStride() {
        val f = Frames.fromCamera(ByteArray(2 * 16), 3, 2, 16, 4, -90)
        assertEquals(PixelFormat.RGBA_8888, f.format)
        assertEquals(270, f.rotation)
        assertEquals(16, f.rowStride)
    }

    @Test
    fun cameraFrameWithoutFourBytesAPixelIsRejected() {
        val e = assertFailsWith<IllegalArgumentException> { Frames.fromCamera(ByteArray(64), 3, 2, 16, 1, 0) }
        assertEquals(true, "RGBA_8888" in e.message!!)
    }

    @ParameterizedTest(name = "EXIF orientation {0} -> {1} degrees")
    @CsvSource("1, 0", "6, 90", "3, 180", "8, 270", "0, 0")
    fun exifOrientationGivesTheClockwiseRotation(
        orientation: Int,
        degrees: Int,
    ) {
        assertEquals(degrees, Frames.rotationForExif(orientation))
    }

    @Test
    fun shortBufferIsRejected() {
        assertFailsWith<IllegalArgumentException> { Frame(ByteArray(10), 3, 2, 12, PixelFormat.RGBA_8888, 0) }
        assertFailsWith<IllegalArgumentException> { Frame(ByteArray(100), 3, 2, 12, PixelFormat.RGBA_8888, 45) }
    }
}
