package dev.edgevit.demo

import android.content.Context
import android.os.Handler
import android.os.Looper
import dev.edgevit.core.Bundle
import dev.edgevit.core.Classification
import dev.edgevit.core.Classifier
import dev.edgevit.core.Engine
import dev.edgevit.core.Frame
import dev.edgevit.core.ModelSpec
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors

/**
 * Owns the engine and runs everything that touches it (open, classify, close) on one background thread, so
 * switching models while the camera streams never races a running inference. Results come back on the main thread.
 */
class DemoSession(
    private val context: Context,
    val bundle: Bundle,
    private val onResult: (ModelSpec, Classification) -> Unit,
    private val onError: (String) -> Unit,
) {
    /** The thread CameraX's analyzer must run on too (see MainActivity). */
    val executor: ExecutorService = Executors.newSingleThreadExecutor()
    private val main = Handler(Looper.getMainLooper())
    private var engine: Engine? = null
    private var classifier: Classifier? = null

    /** Switches to [model]: closes the current engine and opens the new one. */
    fun select(model: ModelSpec) {
        executor.execute {
            engine?.close()
            engine = null
            classifier = null
            try {
                val e = openEngine(context, model)
                engine = e
                classifier = Classifier(bundle, e, k = 5)
            } catch (t: Throwable) {
                main.post { onError("${model.key}: ${t.message ?: t}") }
            }
        }
    }

    /** Classifies [frame] with the current engine; call on [executor] (the camera analyzer does). */
    fun classifyNow(frame: Frame) {
        val c = classifier ?: return
        val model = engine?.model ?: return
        try {
            val result = c.classify(frame)
            main.post { onResult(model, result) }
        } catch (t: Throwable) {
            main.post { onError("${model.key}: ${t.message ?: t}") }
        }
    }

    /** Queues [frame] (a picked photo) for classification. */
    fun classify(frame: Frame) = executor.execute { classifyNow(frame) }

    /** Closes the engine and stops the thread. */
    fun close() {
        executor.execute {
            engine?.close()
            engine = null
        }
        executor.shutdown()
    }
}
