// Pure Kotlin/JVM: no Android dependency, so the pipeline is unit-tested on any machine (and by
// android_demo/check.sh with kotlinc alone, where there is no Android SDK).
plugins {
    alias(libs.plugins.kotlin.jvm)
}

kotlin {
    jvmToolchain(17)
}

val jvmJson: Configuration by configurations.creating

dependencies {
    compileOnly(libs.android.json) // org.json: part of Android itself; a copy only off-device
    jvmJson(libs.android.json)
    testImplementation(libs.android.json)
    testImplementation(libs.kotlin.test.junit5)
    testImplementation(libs.junit.jupiter)
    testRuntimeOnly(libs.junit.platform.launcher)
}

// The golden tests read a bundle: -Pedgevit.bundle=DIR, or EDGEVIT_BUNDLE=DIR (relative to android_demo/).
val bundleDir: Provider<String> =
    providers
        .gradleProperty("edgevit.bundle")
        .orElse(providers.environmentVariable("EDGEVIT_BUNDLE"))
        .map { rootProject.file(it).absolutePath }
        .orElse("")

tasks.test {
    useJUnitPlatform()
    systemProperty("edgevit.bundle", bundleDir.get())
}

// ./gradlew :core:runGolden --args="--bundle DIR --cases DIR/golden --out results.json"
tasks.register<JavaExec>("runGolden") {
    group = "verification"
    description = "The golden runner of docs/reference/bundle.md (what core/run-golden.sh runs)."
    mainClass.set("dev.edgevit.core.GoldenRunner")
    classpath = sourceSets["main"].runtimeClasspath + jvmJson
}
