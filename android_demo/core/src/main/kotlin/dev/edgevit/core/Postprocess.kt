package dev.edgevit.core

import kotlin.math.exp

/** One entry of a top-k list: class [index] with probability [probability]. */
data class Scored(
    val index: Int,
    val probability: Double,
)

/** Model output to class probabilities (bundle.md, "Output"). */
object Postprocess {
    /**
     * The real-valued logits of a model output: float32 as is, int8/uint8 dequantized `(q - zero_point) * scale`.
     *
     * @throws IllegalArgumentException when [output] does not have [spec]'s size or dtype.
     */
    fun logits(
        output: ModelTensor,
        spec: TensorSpec,
    ): DoubleArray {
        require(output.size == spec.size) { "model output has ${output.size} values, expected ${spec.size}" }
        require(output.dtype == spec.dtype) { "model output is ${output.dtype.json}, expected ${spec.dtype.json}" }
        val q = spec.quant
        return DoubleArray(output.size) { i ->
            if (q == null) output.valueAt(i) else (output.valueAt(i) - q.zeroPoint) * q.scale
        }
    }

    /** Softmax in float64: subtract the max, exp, divide by the sum accumulated in index order. */
    fun softmax(z: DoubleArray): DoubleArray {
        require(z.isNotEmpty()) { "softmax of no logits" }
        val m = z.max()
        val e = DoubleArray(z.size) { exp(z[it] - m) }
        var sum = 0.0
        for (x in e) sum += x
        return DoubleArray(e.size) { e[it] / sum }
    }

    /**
     * The [k] classes with the largest logits [z] (k capped at their count), by descending logit, ties by lower
     * index first (a stable sort), each with its softmax probability. Ordering by the logit, not the
     * probability, keeps the order identical across platforms whose `exp` differs in the last bit.
     */
    fun topK(
        z: DoubleArray,
        k: Int,
    ): List<Scored> {
        require(k >= 0) { "k = $k must be >= 0" }
        val p = softmax(z)
        // sortedWith is stable, so equal logits keep increasing index order
        return z.indices
            .sortedWith(compareByDescending<Int> { z[it] })
            .take(k)
            .map { Scored(it, p[it]) }
    }
}
