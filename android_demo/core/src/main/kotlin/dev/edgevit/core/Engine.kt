package dev.edgevit.core

/**
 * A runtime that executes one bundled model. Implementations live in the app (ExecuTorch `Module`, LiteRT
 * `CompiledModel`); the core feeds them tensors it built with [Preprocessor] and reads back their output.
 */
interface Engine : AutoCloseable {
    /** The bundle entry this engine runs. */
    val model: ModelSpec

    /**
     * Runs the model once.
     *
     * @param input a tensor of [model]'s input dtype, layout and shape.
     * @return the raw output, of [model]'s output dtype and size (int8 outputs are not dequantized here).
     */
    fun run(input: ModelTensor): ModelTensor
}

/** The result of classifying one frame. */
data class Classification(
    val top: List<Scored>,
    val labels: List<String>,
    val latencyMillis: Double,
    val medianLatencyMillis: Double,
)

/** Median of the last [capacity] latencies: what the app shows under the top-5. */
class LatencyWindow(
    private val capacity: Int = 30,
) {
    private val values = ArrayDeque<Double>()

    init {
        require(capacity > 0) { "capacity $capacity must be > 0" }
    }

    /** Adds one measurement, dropping the oldest beyond [capacity]. */
    fun add(millis: Double) {
        values.addLast(millis)
        while (values.size > capacity) values.removeFirst()
    }

    /** The median of the kept values (mean of the middle two for an even count); NaN when empty. */
    fun median(): Double {
        if (values.isEmpty()) return Double.NaN
        val s = values.sorted()
        val n = s.size
        return if (n % 2 == 1) s[n / 2] else (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/**
 * Frame -> top-k through one engine: the app's whole inference path except the engine itself.
 *
 * @param clock nanosecond clock used for latency (engine run only, not preprocessing).
 */
class Classifier(
    private val bundle: Bundle,
    private val engine: Engine,
    private val k: Int = 5,
    private val clock: () -> Long = System::nanoTime,
) {
    private val preprocessor = Preprocessor(bundle.preprocess)
    private val latency = LatencyWindow()

    /** Preprocesses [frame], runs the engine, and returns the top-k with labels and latencies. */
    fun classify(frame: Frame): Classification {
        val input = preprocessor.run(frame, engine.model.input)
        val t0 = clock()
        val output = engine.run(input)
        val ms = (clock() - t0) / 1e6
        latency.add(ms)
        val top = Postprocess.topK(Postprocess.logits(output, engine.model.output), k)
        return Classification(top, top.map { bundle.classes[it.index] }, ms, latency.median())
    }
}
