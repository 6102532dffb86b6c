"""Exit with a hint unless ``java`` on PATH is version 17 or newer, as Spark 4 requires."""

import re
import shutil
import subprocess
import sys

MINIMUM = 17
HINT = (
    "Install a Java 17 (or newer) runtime, for example `apt-get install openjdk-17-jre-headless` "
    "on Debian or Ubuntu, or `brew install openjdk@17` on macOS, and put its bin folder on PATH "
    "or set JAVA_HOME."
)


def main() -> int:
    java = shutil.which("java")
    if java is None:
        print(f"Java was not found on PATH. Spark needs Java {MINIMUM} or newer. {HINT}")
        return 1
    output = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        print(f"Could not read the Java version from `java -version`: {output.strip()!r}. {HINT}")
        return 1
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    if major == 1 and match.group(2):
        major = int(match.group(2))
    if major < MINIMUM:
        print(f"{java} is Java {major}, but Spark needs Java {MINIMUM} or newer. {HINT}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
