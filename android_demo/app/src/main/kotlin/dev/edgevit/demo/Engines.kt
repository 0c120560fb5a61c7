package dev.edgevit.demo

import android.content.Context
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import dev.edgevit.core.Backend
import dev.edgevit.core.DType
import dev.edgevit.core.Engine
import dev.edgevit.core.ModelSpec
import dev.edgevit.core.ModelTensor
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor
import java.io.File

/** Opens the engine for [model]'s backend: ExecuTorch for `.pte`, LiteRT for `.tflite`. */
fun openEngine(
    context: Context,
    model: ModelSpec,
): Engine {
    val file = BundleAssets.modelFile(context, model)
    return when (model.backend) {
        Backend.EXECUTORCH -> ExecuTorchEngine(model, file)
        Backend.TFLITE -> LiteRtEngine(model, file)
        Backend.COREML -> throw IllegalArgumentException("${model.key}: Core ML models run on iOS only")
    }
}

/** Raw output values as the core's tensor of [model]'s output spec, checking the count. */
private fun outputTensor(
    model: ModelSpec,
    floats: FloatArray?,
    bytes: ByteArray?,
): ModelTensor {
    val n = floats?.size ?: bytes!!.size
    check(n == model.output.size) { "${model.key} returned $n values, bundle.json says ${model.output.shape}" }
    return if (floats != null) {
        ModelTensor.float32(model.output.shape, floats)
    } else {
        ModelTensor.quantized(model.output.dtype, model.output.shape, bytes!!)
    }
}

/** An ExecuTorch program (`org.pytorch.executorch.Module`) run through its `forward` method. */
class ExecuTorchEngine(
    override val model: ModelSpec,
    file: File,
) : Engine {
    private val module = Module.load(file.absolutePath)
    private val inputShape =
        model.input.shape
            .map { it.toLong() }
            .toLongArray()

    override fun run(input: ModelTensor): ModelTensor {
        val tensor =
            when (input.dtype) {
                DType.FLOAT32 -> Tensor.fromBlob(input.floats!!, inputShape)
                DType.INT8 -> Tensor.fromBlob(input.bytes!!, inputShape)
                DType.UINT8 -> Tensor.fromBlobUnsigned(input.bytes!!, inputShape)
            }
        val out = module.forward(EValue.from(tensor))[0].toTensor()
        return when (model.output.dtype) {
            DType.FLOAT32 -> outputTensor(model, out.dataAsFloatArray, null)
            DType.INT8 -> outputTensor(model, null, out.dataAsByteArray)
            DType.UINT8 -> outputTensor(model, null, out.dataAsUnsignedByteArray)
        }
    }

    override fun close() = module.destroy()
}

/** A LiteRT model through the CompiledModel API (CPU), with its input and output buffers made once. */
class LiteRtEngine(
    override val model: ModelSpec,
    file: File,
    accelerator: Accelerator = Accelerator.CPU,
) : Engine {
    private val compiled = CompiledModel.create(file.absolutePath, CompiledModel.Options(accelerator))
    private val inputs: List<TensorBuffer> = compiled.createInputBuffers()
    private val outputs: List<TensorBuffer> = compiled.createOutputBuffers()

    override fun run(input: ModelTensor): ModelTensor {
        // uint8 bytes go in through writeInt8 as they are: the buffer holds raw bytes either way
        if (input.dtype == DType.FLOAT32) inputs[0].writeFloat(input.floats!!) else inputs[0].writeInt8(input.bytes!!)
        compiled.run(inputs, outputs)
        return if (model.output.dtype == DType.FLOAT32) {
            outputTensor(model, outputs[0].readFloat(), null)
        } else {
            outputTensor(model, null, outputs[0].readInt8())
        }
    }

    override fun close() {
        inputs.forEach { it.close() }
        outputs.forEach { it.close() }
        compiled.close()
    }
}
