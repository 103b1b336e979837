// Pure Java (no Android imports): the app uses it, and it is unit-tested on the host against golden vectors
// written by keras_mixer (tests/test_android_core.py in the Python repo runs the same tests with plain javac).
plugins {
    `java-library`
}

java {
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

dependencies {
    testImplementation("org.junit.jupiter:junit-jupiter:5.10.3")
    testRuntimeOnly("org.junit.platform:junit-platform-launcher")
}

tasks.test {
    useJUnitPlatform()
    // golden vectors: python -m pytest tests/test_android_core.py writes them; point golden.dir at that folder
    systemProperty("golden.dir", System.getProperty("golden.dir") ?: "")
}
