#!/usr/bin/env python3
"""Writes ios_demo/EdgeVitDemo.xcodeproj/project.pbxproj: the app target (every .swift under EdgeVitDemo/), the
hosted unit-test target (every .swift under EdgeVitDemoTests/), the local EdgeVitCore package and ExecuTorch's
Swift package at branch ``swiftpm-<version>``, and the build phase that copies the edgevit bundle into the app.

Object ids are derived from names, so rerunning after adding a source file changes only what it must. Xcode may
rewrite the file when the project is edited in the IDE; tools/check_xcodeproj.py checks either form.

Usage: gen_xcodeproj.py [--executorch-version 1.5.1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IOS = HERE.parent
PBXPROJ = IOS / "EdgeVitDemo.xcodeproj" / "project.pbxproj"
APP, TESTS = "EdgeVitDemo", "EdgeVitDemoTests"
EXECUTORCH_URL = "https://github.com/pytorch/executorch"
EXECUTORCH_VERSION = "1.5.1"  # the Python executorch edgevit exports with (pyproject: executorch>=1.5,<1.6)
# The ExecuTorch runtime, its XNNPACK backend and the CPU kernels a lowered .pte needs (linked with -all_load).
EXECUTORCH_PRODUCTS = ("executorch", "backend_xnnpack", "kernels_optimized", "kernels_quantized")

COPY_BUNDLE_SCRIPT = r"""# Copies the edgevit bundle (bundle.json, models/, golden/) into the app as EdgeVitBundle/.
BUNDLE_SRC="${EDGEVIT_BUNDLE:-${SRCROOT}/bundle}"
if [ ! -f "${BUNDLE_SRC}/bundle.json" ]; then
  echo "error: no edgevit bundle at ${BUNDLE_SRC}: run 'edgevit bundle RUN --platform ios --out DIR'," \
    "then build with EDGEVIT_BUNDLE=DIR (an xcodebuild setting) or link DIR at ios_demo/bundle"
  exit 1
fi
DEST="${TARGET_BUILD_DIR}/${UNLOCALIZED_RESOURCES_FOLDER_PATH}/EdgeVitBundle"
rm -rf "${DEST}"
mkdir -p "${DEST}"
cp -R "${BUNDLE_SRC}/." "${DEST}/"
"""


def oid(name: str) -> str:
    """A stable 24-hex-digit object id for ``name``."""
    return hashlib.sha1(name.encode()).hexdigest()[:24].upper()


def q(s: str) -> str:
    """An OpenStep plist string: bare when safe, else quoted with escapes."""
    if s and all(c.isalnum() or c in "._/$" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render(obj: object, indent: int) -> str:
    pad = "\t" * indent
    if isinstance(obj, dict):
        inner = "".join(f"{pad}\t{k} = {render(v, indent + 1)};\n" for k, v in obj.items())
        return "{\n" + inner + pad + "}"
    if isinstance(obj, list):
        inner = "".join(f"{pad}\t{render(v, indent + 1)},\n" for v in obj)
        return "(\n" + inner + pad + ")"
    return q(str(obj))


def sources(folder: str) -> list[str]:
    return sorted(p.name for p in (IOS / folder).glob("*.swift"))


def build_settings(target: str, config: str) -> dict[str, object]:
    if target == "project":
        s: dict[str, object] = {
            "ALWAYS_SEARCH_USER_PATHS": "NO",
            "CLANG_ENABLE_MODULES": "YES",
            "ENABLE_USER_SCRIPT_SANDBOXING": "NO",  # the copy phase reads EDGEVIT_BUNDLE outside the project
            "IPHONEOS_DEPLOYMENT_TARGET": "17.0",
            "SDKROOT": "iphoneos",
            "SWIFT_VERSION": "5.0",
        }
        if config == "Debug":
            s.update(
                DEBUG_INFORMATION_FORMAT="dwarf",
                ONLY_ACTIVE_ARCH="YES",
                SWIFT_OPTIMIZATION_LEVEL="-Onone",
                SWIFT_ACTIVE_COMPILATION_CONDITIONS="DEBUG",
                ENABLE_TESTABILITY="YES",
            )
        else:
            s.update(
                DEBUG_INFORMATION_FORMAT="dwarf-with-dsym",
                SWIFT_COMPILATION_MODE="wholemodule",
                SWIFT_OPTIMIZATION_LEVEL="-O",
                VALIDATE_PRODUCT="YES",
            )
        return s
    if target == APP:
        return {
            "CODE_SIGN_STYLE": "Automatic",
            "CURRENT_PROJECT_VERSION": "1",
            "GENERATE_INFOPLIST_FILE": "YES",
            "INFOPLIST_KEY_CFBundleDisplayName": "EdgeVit",
            "INFOPLIST_KEY_NSCameraUsageDescription": "Classifies what the camera sees, on the device.",
            "INFOPLIST_KEY_UIApplicationSceneManifest_Generation": "YES",
            "INFOPLIST_KEY_UILaunchScreen_Generation": "YES",
            "LD_RUNPATH_SEARCH_PATHS": ["$(inherited)", "@executable_path/Frameworks"],
            "MARKETING_VERSION": "0.1.0",
            "OTHER_LDFLAGS": ["$(inherited)", "-all_load"],  # ExecuTorch kernels/backends register at load
            "PRODUCT_BUNDLE_IDENTIFIER": "org.edgevit.demo",
            "PRODUCT_NAME": "$(TARGET_NAME)",
            "TARGETED_DEVICE_FAMILY": "1,2",
        }
    return {
        "BUNDLE_LOADER": "$(TEST_HOST)",
        "CODE_SIGN_STYLE": "Automatic",
        "GENERATE_INFOPLIST_FILE": "YES",
        "PRODUCT_BUNDLE_IDENTIFIER": "org.edgevit.demo.tests",
        "PRODUCT_NAME": "$(TARGET_NAME)",
        "TEST_HOST": "$(BUILT_PRODUCTS_DIR)/EdgeVitDemo.app/$(BUNDLE_EXECUTABLE_FOLDER_PATH)/EdgeVitDemo",
    }


def project(executorch_version: str) -> str:
    objs: dict[str, dict[str, object]] = {}
    comments: dict[str, str] = {}

    def add(key: str, comment: str, body: dict[str, object]) -> str:
        i = oid(key)
        objs[i] = body
        comments[i] = comment
        return i

    def ref(i: str) -> str:
        return i  # comments are cosmetic; Xcode re-adds them

    groups, phases = {}, {}
    for folder in (APP, TESTS):
        files = []
        build_files = []
        for name in sources(folder):
            f = add(
                f"file:{folder}/{name}",
                name,
                {
                    "isa": "PBXFileReference",
                    "lastKnownFileType": "sourcecode.swift",
                    "path": name,
                    "sourceTree": "<group>",
                },
            )
            files.append(f)
            build_files.append(
                add(f"build:{folder}/{name}", f"{name} in Sources", {"isa": "PBXBuildFile", "fileRef": ref(f)})
            )
        groups[folder] = add(
            f"group:{folder}", folder, {"isa": "PBXGroup", "children": files, "path": folder, "sourceTree": "<group>"}
        )
        phases[folder] = add(
            f"sources:{folder}",
            "Sources",
            {
                "isa": "PBXSourcesBuildPhase",
                "buildActionMask": 2147483647,
                "files": build_files,
                "runOnlyForDeploymentPostprocessing": 0,
            },
        )
    app_product = add(
        "product:app",
        "EdgeVitDemo.app",
        {
            "isa": "PBXFileReference",
            "explicitFileType": "wrapper.application",
            "includeInIndex": 0,
            "path": "EdgeVitDemo.app",
            "sourceTree": "BUILT_PRODUCTS_DIR",
        },
    )
    test_product = add(
        "product:tests",
        "EdgeVitDemoTests.xctest",
        {
            "isa": "PBXFileReference",
            "explicitFileType": "wrapper.cfbundle",
            "includeInIndex": 0,
            "path": "EdgeVitDemoTests.xctest",
            "sourceTree": "BUILT_PRODUCTS_DIR",
        },
    )
    products = add(
        "group:Products",
        "Products",
        {"isa": "PBXGroup", "children": [app_product, test_product], "name": "Products", "sourceTree": "<group>"},
    )
    main_group = add(
        "group:main",
        "",
        {"isa": "PBXGroup", "children": [groups[APP], groups[TESTS], products], "sourceTree": "<group>"},
    )

    core_pkg = add(
        "pkg:EdgeVitCore",
        'XCLocalSwiftPackageReference "EdgeVitCore"',
        {"isa": "XCLocalSwiftPackageReference", "relativePath": "EdgeVitCore"},
    )
    et_pkg = add(
        "pkg:executorch",
        'XCRemoteSwiftPackageReference "executorch"',
        {
            "isa": "XCRemoteSwiftPackageReference",
            "repositoryURL": EXECUTORCH_URL,
            "requirement": {"branch": f"swiftpm-{executorch_version}", "kind": "branch"},
        },
    )
    deps, link_files = [], []
    for product, pkg in [("EdgeVitCore", core_pkg)] + [(p, et_pkg) for p in EXECUTORCH_PRODUCTS]:
        d = add(
            f"dep:{product}",
            product,
            {"isa": "XCSwiftPackageProductDependency", "package": pkg, "productName": product},
        )
        deps.append(d)
        link_files.append(add(f"link:{product}", f"{product} in Frameworks", {"isa": "PBXBuildFile", "productRef": d}))
    app_frameworks = add(
        "frameworks:app",
        "Frameworks",
        {
            "isa": "PBXFrameworksBuildPhase",
            "buildActionMask": 2147483647,
            "files": link_files,
            "runOnlyForDeploymentPostprocessing": 0,
        },
    )
    test_frameworks = add(
        "frameworks:tests",
        "Frameworks",
        {
            "isa": "PBXFrameworksBuildPhase",
            "buildActionMask": 2147483647,
            "files": [],
            "runOnlyForDeploymentPostprocessing": 0,
        },
    )
    app_resources = add(
        "resources:app",
        "Resources",
        {
            "isa": "PBXResourcesBuildPhase",
            "buildActionMask": 2147483647,
            "files": [],
            "runOnlyForDeploymentPostprocessing": 0,
        },
    )
    copy_bundle = add(
        "script:copy-bundle",
        "Copy edgevit bundle",
        {
            "isa": "PBXShellScriptBuildPhase",
            "alwaysOutOfDate": 1,
            "buildActionMask": 2147483647,
            "files": [],
            "inputPaths": [],
            "name": "Copy edgevit bundle",
            "outputPaths": [],
            "runOnlyForDeploymentPostprocessing": 0,
            "shellPath": "/bin/sh",
            "shellScript": COPY_BUNDLE_SCRIPT,
            "showEnvVarsInLog": 0,
        },
    )

    def config_list(target: str) -> str:
        configs = [
            add(
                f"config:{target}:{c}",
                c,
                {"isa": "XCBuildConfiguration", "buildSettings": build_settings(target, c), "name": c},
            )
            for c in ("Debug", "Release")
        ]
        return add(
            f"configlist:{target}",
            f"Build configuration list for {target}",
            {
                "isa": "XCConfigurationList",
                "buildConfigurations": configs,
                "defaultConfigurationIsVisible": 0,
                "defaultConfigurationName": "Release",
            },
        )

    app_target = add(
        "target:app",
        APP,
        {
            "isa": "PBXNativeTarget",
            "buildConfigurationList": config_list(APP),
            "buildPhases": [phases[APP], app_frameworks, app_resources, copy_bundle],
            "buildRules": [],
            "dependencies": [],
            "name": APP,
            "packageProductDependencies": deps,
            "productName": APP,
            "productReference": app_product,
            "productType": "com.apple.product-type.application",
        },
    )
    proxy = add(
        "proxy:app",
        "PBXContainerItemProxy",
        {
            "isa": "PBXContainerItemProxy",
            "containerPortal": oid("project"),
            "proxyType": 1,
            "remoteGlobalIDString": app_target,
            "remoteInfo": APP,
        },
    )
    test_dep = add(
        "targetdep:app",
        "PBXTargetDependency",
        {"isa": "PBXTargetDependency", "target": app_target, "targetProxy": proxy},
    )
    test_target = add(
        "target:tests",
        TESTS,
        {
            "isa": "PBXNativeTarget",
            "buildConfigurationList": config_list(TESTS),
            "buildPhases": [phases[TESTS], test_frameworks],
            "buildRules": [],
            "dependencies": [test_dep],
            "name": TESTS,
            "productName": TESTS,
            "productReference": test_product,
            "productType": "com.apple.product-type.bundle.unit-test",
        },
    )
    add(
        "project",
        "Project object",
        {
            "isa": "PBXProject",
            "attributes": {
                "BuildIndependentTargetsInParallel": 1,
                "LastSwiftUpdateCheck": 1600,
                "LastUpgradeCheck": 1600,
                "TargetAttributes": {
                    app_target: {"CreatedOnToolsVersion": "16.0"},
                    test_target: {"CreatedOnToolsVersion": "16.0", "TestTargetID": app_target},
                },
            },
            "buildConfigurationList": config_list("project"),
            "compatibilityVersion": "Xcode 14.0",
            "developmentRegion": "en",
            "hasScannedForEncodings": 0,
            "knownRegions": ["en", "Base"],
            "mainGroup": main_group,
            "packageReferences": [core_pkg, et_pkg],
            "productRefGroup": products,
            "projectDirPath": "",
            "projectRoot": "",
            "targets": [app_target, test_target],
        },
    )

    by_isa: dict[str, list[str]] = {}
    for i, body in objs.items():
        by_isa.setdefault(str(body["isa"]), []).append(i)
    out = [
        "// !$*UTF8*$!",
        "{",
        "\tarchiveVersion = 1;",
        "\tclasses = {",
        "\t};",
        "\tobjectVersion = 60;",
        "\tobjects = {",
    ]
    for isa in sorted(by_isa):
        out.append(f"\n/* Begin {isa} section */")
        for i in sorted(by_isa[isa]):
            out.append(f"\t\t{i} /* {comments[i]} */ = {render(objs[i], 2)};")
        out.append(f"/* End {isa} section */")
    out += ["\t};", f"\trootObject = {oid('project')} /* Project object */;", "}", ""]
    return "\n".join(out)


SCHEME = IOS / "EdgeVitDemo.xcodeproj" / "xcshareddata" / "xcschemes" / "EdgeVitDemo.xcscheme"


def scheme() -> str:
    """The shared EdgeVitDemo scheme: builds and runs the app, tests EdgeVitDemoTests (so `xcodebuild test
    -scheme EdgeVitDemo` works on a fresh clone, before Xcode has created any user scheme)."""

    def ref(target: str, product: str) -> str:
        return (
            f'<BuildableReference BuildableIdentifier = "primary" BlueprintIdentifier = "{oid(target)}" '
            f'BuildableName = "{product}" BlueprintName = "{product.split(".")[0]}" '
            'ReferencedContainer = "container:EdgeVitDemo.xcodeproj"></BuildableReference>'
        )

    app = ref("target:app", "EdgeVitDemo.app")
    tests = ref("target:tests", "EdgeVitDemoTests.xctest")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<Scheme LastUpgradeVersion = "1600" version = "1.7">
   <BuildAction parallelizeBuildables = "YES" buildImplicitDependencies = "YES">
      <BuildActionEntries>
         <BuildActionEntry buildForTesting = "YES" buildForRunning = "YES" buildForProfiling = "YES"
            buildForArchiving = "YES" buildForAnalyzing = "YES">
            {app}
         </BuildActionEntry>
      </BuildActionEntries>
   </BuildAction>
   <TestAction buildConfiguration = "Debug" selectedDebuggerIdentifier = "Xcode.DebuggerFoundation.Debugger.LLDB"
      selectedLauncherIdentifier = "Xcode.DebuggerFoundation.Launcher.LLDB" shouldUseLaunchSchemeArgsEnv = "YES">
      <Testables>
         <TestableReference skipped = "NO">
            {tests}
         </TestableReference>
      </Testables>
   </TestAction>
   <LaunchAction buildConfiguration = "Debug" selectedDebuggerIdentifier = "Xcode.DebuggerFoundation.Debugger.LLDB"
      selectedLauncherIdentifier = "Xcode.DebuggerFoundation.Launcher.LLDB" launchStyle = "0"
      useCustomWorkingDirectory = "NO" ignoresPersistentStateOnLaunch = "NO" debugDocumentVersioning = "YES"
      debugServiceExtension = "internal" allowLocationSimulation = "YES">
      <BuildableProductRunnable runnableDebuggingMode = "0">
         {app}
      </BuildableProductRunnable>
   </LaunchAction>
   <ProfileAction buildConfiguration = "Release" shouldUseLaunchSchemeArgsEnv = "YES" savedToolIdentifier = ""
      useCustomWorkingDirectory = "NO" debugDocumentVersioning = "YES">
      <BuildableProductRunnable runnableDebuggingMode = "0">
         {app}
      </BuildableProductRunnable>
   </ProfileAction>
   <AnalyzeAction buildConfiguration = "Debug"></AnalyzeAction>
   <ArchiveAction buildConfiguration = "Release" revealArchiveInOrganizer = "YES"></ArchiveAction>
</Scheme>
"""


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executorch-version", default=EXECUTORCH_VERSION)
    args = parser.parse_args()
    write_atomic(PBXPROJ, project(args.executorch_version))
    write_atomic(SCHEME, scheme())
    print(f"wrote {PBXPROJ.relative_to(IOS.parent)}: {len(sources(APP))} app and {len(sources(TESTS))} test sources")


if __name__ == "__main__":
    main()
