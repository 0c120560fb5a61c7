import java.util.Properties

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
    alias(libs.plugins.kotlin.compose)
}

android {
    namespace = "dev.edgevit.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.edgevit.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        ndk {
            abiFilters += listOf("arm64-v8a", "x86_64") // the ABIs the ExecuTorch AAR ships
        }
    }

    buildFeatures {
        compose = true
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    androidResources {
        noCompress += listOf("pte", "tflite", "raw", "bin") // models and golden buffers are read as they are
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation(project(":core"))
    implementation(platform(libs.compose.bom))
    implementation(libs.compose.ui)
    implementation(libs.compose.material3)
    implementation(libs.compose.ui.tooling.preview)
    implementation(libs.activity.compose)
    implementation(libs.core.ktx)
    implementation(libs.lifecycle.runtime.compose)
    implementation(libs.camerax.core)
    implementation(libs.camerax.camera2)
    implementation(libs.camerax.lifecycle)
    implementation(libs.camerax.view)
    implementation(libs.exifinterface)
    implementation(libs.executorch.android)
    implementation(libs.litert)
    debugImplementation(libs.compose.ui.tooling)
    androidTestImplementation(libs.androidx.test.runner)
    androidTestImplementation(libs.androidx.test.ext.junit)
}

/**
 * Copies an edgevit app bundle (bundle.json, models/, golden/) into the app's assets under `bundle/`. Fails with a
 * message saying how to make and point at a bundle when there is none: an app without its models is no demo.
 */
abstract class CopyEdgeVitBundle : DefaultTask() {
    /** The bundle folder; empty when none was configured. */
    @get:Input
    abstract val bundlePath: Property<String>

    /** Its files, so a changed bundle re-runs the copy. */
    @get:InputFiles
    @get:PathSensitive(PathSensitivity.RELATIVE)
    abstract val bundleFiles: ConfigurableFileCollection

    @get:OutputDirectory
    abstract val outputDir: DirectoryProperty

    @get:Inject
    abstract val fs: FileSystemOperations

    @TaskAction
    fun copy() {
        val path = bundlePath.get()
        val how =
            "Make one with `edgevit bundle RUN --platform android --out DIR` and set edgevit.bundle=DIR in " +
                "android_demo/local.properties (or pass -Pedgevit.bundle=DIR, or set EDGEVIT_BUNDLE=DIR)."
        if (path.isBlank()) throw GradleException("No edgevit app bundle configured. $how")
        val dir = File(path)
        if (!File(dir, "bundle.json").isFile) {
            throw GradleException("edgevit.bundle=$path is not an app bundle (no bundle.json there). $how")
        }
        if (!File(dir, "models").isDirectory) throw GradleException("edgevit bundle $path has no models/ folder. $how")
        fs.sync {
            from(dir) {
                include("bundle.json", "models/**", "golden/**")
            }
            into(outputDir.get().dir("bundle"))
        }
        logger.lifecycle("edgevit: bundled $dir into the app's assets (assets/bundle/)")
    }
}

val localProperties =
    Properties().apply {
        val f = rootProject.file("local.properties")
        if (f.isFile) f.inputStream().use { load(it) }
    }
val edgevitBundle: Provider<String> =
    providers
        .gradleProperty("edgevit.bundle")
        .orElse(providers.environmentVariable("EDGEVIT_BUNDLE"))
        .orElse(providers.provider { localProperties.getProperty("edgevit.bundle") ?: "" })
        .map { if (it.isBlank()) "" else rootProject.file(it).absolutePath }

androidComponents {
    onVariants { variant ->
        val name = "copyEdgeVitBundle" + variant.name.replaceFirstChar { it.uppercase() }
        val copy =
            tasks.register<CopyEdgeVitBundle>(name) {
                group = "edgevit"
                description = "Copies the edgevit app bundle into the ${variant.name} assets."
                bundlePath.set(edgevitBundle)
                bundleFiles.from(edgevitBundle.map { p -> if (p.isBlank()) files() else fileTree(p) })
            }
        variant.sources.assets?.addGeneratedSourceDirectory(copy, CopyEdgeVitBundle::outputDir)
    }
}
