package dev.edgevit.demo

import android.Manifest
import android.content.pm.PackageManager
import android.graphics.Bitmap
import android.net.Uri
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.camera.core.CameraSelector
import androidx.camera.core.ImageAnalysis
import androidx.camera.core.Preview
import androidx.camera.lifecycle.ProcessCameraProvider
import androidx.camera.view.PreviewView
import androidx.compose.foundation.Image
import androidx.compose.foundation.horizontalScroll
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.rememberScrollState
import androidx.compose.material3.Button
import androidx.compose.material3.FilterChip
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.DisposableEffect
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.platform.LocalContext
import androidx.compose.ui.unit.dp
import androidx.compose.ui.viewinterop.AndroidView
import androidx.core.content.ContextCompat
import androidx.lifecycle.compose.LocalLifecycleOwner
import dev.edgevit.core.Backend
import dev.edgevit.core.Classification
import dev.edgevit.core.ModelSpec
import dev.edgevit.core.Bundle as AppBundle

/** One screen: model switcher, camera or picked photo, top-5 with probabilities and the median latency. */
class MainActivity : ComponentActivity() {
    private var session: DemoSession? = null

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val bundle =
            try {
                BundleAssets.load(this)
            } catch (e: Exception) {
                setContent { Message("The app's bundle could not be read: ${e.message}") }
                return
            }
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { DemoScreen(bundle) { session = it } }
            }
        }
    }

    override fun onDestroy() {
        session?.close()
        super.onDestroy()
    }
}

private enum class Source { CAMERA, PHOTO }

/** A short label for a model chip: "ExecuTorch fp32", "LiteRT int8 NHWC" when two would read the same. */
private fun label(
    m: ModelSpec,
    all: List<ModelSpec>,
): String {
    val backend = if (m.backend == Backend.EXECUTORCH) "ExecuTorch" else "LiteRT"
    val base = "$backend ${m.precision}"
    val clash = all.count { it.backend == m.backend && it.precision == m.precision } > 1
    return if (clash) "$base ${m.input.layout?.json ?: ""} ${m.key}".trim() else base
}

@Composable
private fun DemoScreen(
    bundle: AppBundle,
    onSession: (DemoSession) -> Unit,
) {
    val context = LocalContext.current
    val runnable = remember(bundle) { bundle.models.filter { it.backend != Backend.COREML } }
    var selected by remember { mutableStateOf(runnable.firstOrNull()) }
    var result by remember { mutableStateOf<Pair<ModelSpec, Classification>?>(null) }
    var error by remember { mutableStateOf<String?>(null) }
    var source by remember { mutableStateOf(Source.CAMERA) }
    var photo by remember { mutableStateOf<Bitmap?>(null) }
    val session =
        remember(bundle) {
            DemoSession(context, bundle, onResult = { m, c ->
                result = m to c
                error = null
            }, onError = { error = it }).also(onSession)
        }
    LaunchedEffect(selected) {
        selected?.let {
            result = null
            session.select(it)
        }
    }
    var hasCamera by remember {
        mutableStateOf(
            ContextCompat.checkSelfPermission(context, Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED,
        )
    }
    val askCamera = rememberLauncherForActivityResult(ActivityResultContracts.RequestPermission()) { hasCamera = it }
    val pickPhoto =
        rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri: Uri? ->
            if (uri != null) {
                source = Source.PHOTO
                session.executor.execute {
                    try {
                        val (frame, bitmap) = PhotoFrames.load(context, uri, bundle.preprocess.resizeShorter)
                        ContextCompat.getMainExecutor(context).execute { photo = bitmap }
                        session.classifyNow(frame)
                    } catch (e: Exception) {
                        ContextCompat.getMainExecutor(context).execute { error = "photo: ${e.message}" }
                    }
                }
            }
        }

    Column(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        Text("${bundle.modelName} · ${bundle.classes.size} classes", style = MaterialTheme.typography.titleMedium)
        Row(Modifier.horizontalScroll(rememberScrollState()), horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            for (m in runnable) {
                FilterChip(selected = m == selected, onClick = { selected = m }, label = { Text(label(m, runnable)) })
            }
        }
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            val onCamera = {
                source = Source.CAMERA
                if (!hasCamera) askCamera.launch(Manifest.permission.CAMERA)
            }
            if (source ==
                Source.CAMERA
            ) {
                Button(onCamera) { Text("Camera") }
            } else {
                OutlinedButton(onCamera) { Text("Camera") }
            }
            OutlinedButton(
                { pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) },
            ) {
                Text("Pick photo")
            }
        }
        Box(Modifier.fillMaxWidth().height(320.dp), contentAlignment = Alignment.Center) {
            when {
                source == Source.PHOTO && photo != null -> {
                    Image(
                        photo!!.asImageBitmap(),
                        "picked photo",
                        Modifier.fillMaxSize(),
                        contentScale = ContentScale.Fit,
                    )
                }

                source == Source.CAMERA && hasCamera -> {
                    CameraPreview(session)
                }

                source == Source.CAMERA -> {
                    Text("Camera permission is needed for live classification.")
                }
            }
        }
        error?.let { Text(it, color = MaterialTheme.colorScheme.error) }
        result?.let { (model, c) -> Results(bundle, model, c) }
    }
}

@Composable
private fun Results(
    bundle: AppBundle,
    model: ModelSpec,
    c: Classification,
) {
    Column(verticalArrangement = Arrangement.spacedBy(4.dp)) {
        for ((i, s) in c.top.withIndex()) {
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text(c.labels[i], Modifier.width(96.dp))
                LinearProgressIndicator(progress = { s.probability.toFloat() }, modifier = Modifier.weight(1f))
                Spacer(Modifier.width(8.dp))
                Text("%.1f%%".format(100 * s.probability), Modifier.width(56.dp))
            }
        }
        Text(
            "${model.key}: median %.1f ms over recent inferences (last %.1f ms)".format(
                c.medianLatencyMillis,
                c.latencyMillis,
            ),
            style = MaterialTheme.typography.bodySmall,
        )
        Text("${bundle.classes.size} classes, top-5 by logit", style = MaterialTheme.typography.bodySmall)
    }
}

/** The back camera's preview plus an RGBA_8888 ImageAnalysis whose frames go to [session] on its thread. */
@Composable
private fun CameraPreview(session: DemoSession) {
    val context = LocalContext.current
    val lifecycleOwner = LocalLifecycleOwner.current
    val previewView = remember { PreviewView(context) }
    DisposableEffect(lifecycleOwner) {
        val future = ProcessCameraProvider.getInstance(context)
        future.addListener({
            val provider = future.get()
            val preview = Preview.Builder().build().also { it.setSurfaceProvider(previewView.surfaceProvider) }
            val analysis =
                ImageAnalysis
                    .Builder()
                    .setOutputImageFormat(ImageAnalysis.OUTPUT_IMAGE_FORMAT_RGBA_8888)
                    .setBackpressureStrategy(ImageAnalysis.STRATEGY_KEEP_ONLY_LATEST)
                    .build()
                    .also { it.setAnalyzer(session.executor, RgbaAnalyzer(session::classifyNow)) }
            provider.unbindAll()
            provider.bindToLifecycle(lifecycleOwner, CameraSelector.DEFAULT_BACK_CAMERA, preview, analysis)
        }, ContextCompat.getMainExecutor(context))
        onDispose {
            if (future.isDone) future.get().unbindAll()
        }
    }
    AndroidView({ previewView }, Modifier.fillMaxSize())
}

@Composable
private fun Message(text: String) {
    MaterialTheme { Surface(Modifier.fillMaxSize()) { Text(text, Modifier.padding(24.dp)) } }
}
