#!/bin/sh
# Download the jars pinned in jars.env into a folder and verify each against the
# checksum that Maven Central publishes beside it (.sha512 where present, else .sha1).
#
#   download-jars.sh JARS_ENV TARGET_DIR
#
# TARGET_DIR is Spark's jars folder, so the build also checks that hadoop-aws matches
# the hadoop-client-api jar already there.
set -eu

jars_env=$1
target=$2
# shellcheck source=SCRIPTDIR/jars.env
. "$jars_env"

api_jar="$target/hadoop-client-api-$HADOOP_AWS_VERSION.jar"
if [ ! -f "$api_jar" ]; then
    echo "error: $api_jar not found. HADOOP_AWS_VERSION in $jars_env must equal the" \
        "hadoop-client-api version in $target:" >&2
    for found in "$target"/hadoop-client-api-*.jar; do
        echo "  $found" >&2
    done
    exit 1
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

fetch() {
    # HTTPS only, also on redirects; fail on HTTP errors rather than saving an error page.
    curl --proto '=https' --proto-redir '=https' --tlsv1.2 --fail --silent --show-error \
        --location --retry 3 --output "$2" "$1"
}

download() {
    group_path=$(echo "$1" | tr . /)
    artifact=$2
    version=$3
    jar="$artifact-$version.jar"
    url="$MAVEN_REPOSITORY/$group_path/$artifact/$version/$jar"

    fetch "$url" "$workdir/$jar"
    if fetch "$url.sha512" "$workdir/$jar.sha512" 2>/dev/null; then
        tool=sha512sum
        expected=$(cut -d ' ' -f 1 < "$workdir/$jar.sha512")
    else
        fetch "$url.sha1" "$workdir/$jar.sha1"
        tool=sha1sum
        expected=$(cut -d ' ' -f 1 < "$workdir/$jar.sha1")
    fi
    actual=$($tool "$workdir/$jar" | cut -d ' ' -f 1)
    if [ "$actual" != "$expected" ]; then
        echo "error: $url has $tool $actual, but Maven Central publishes $expected." \
            "Rebuild to download it again." >&2
        exit 1
    fi
    mv "$workdir/$jar" "$target/$jar"
    echo "verified $jar ($tool $actual)"
}

download org.apache.hadoop hadoop-aws "$HADOOP_AWS_VERSION"
download software.amazon.awssdk bundle "$AWS_SDK_BUNDLE_VERSION"
download software.amazon.s3.analyticsaccelerator analyticsaccelerator-s3 \
    "$ANALYTICS_ACCELERATOR_VERSION"
download org.apache.spark "spark-hadoop-cloud_$SCALA_BINARY_VERSION" \
    "$SPARK_HADOOP_CLOUD_VERSION"
