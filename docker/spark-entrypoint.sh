#!/bin/sh
# Entrypoint of the Spark image: write the run-time Spark configuration, then run one
# role in the foreground.
#
#   master | worker | history      a Spark daemon
#   submit [STAGE ...]             upload DATASET's CSV files to the raw zone, then
#                                  spark-submit each stage (default: every Spark stage)
#   any other command              run as given, with SPARK_CONF_DIR set
set -eu

SPARK_STAGES="ingest merge explore prepare index als"
BUCKET_URI=${BUCKET_URI:-s3://lenspark}
bucket=${BUCKET_URI#s3://}
master_url=${SPARK_MASTER_URL:-spark://spark-master:7077}

# Copy the image's layered settings into a private folder and append the RPC secret,
# so that the secret is in neither the image nor a process's command line.
if [ -z "${SPARK_AUTH_SECRET:-}" ]; then
    echo "error: SPARK_AUTH_SECRET is empty. Set it in .env (see .env.example), for" \
        "example to the output of: openssl rand -hex 32" >&2
    exit 1
fi
umask 077
SPARK_CONF_DIR=$(mktemp -d)
export SPARK_CONF_DIR
cp "$LENSPARK_HOME/conf/spark-layered.conf" "$SPARK_CONF_DIR/spark-defaults.conf"
printf '\n# Added at container start from SPARK_AUTH_SECRET.\nspark.authenticate.secret %s\n' \
    "$SPARK_AUTH_SECRET" >> "$SPARK_CONF_DIR/spark-defaults.conf"
unset SPARK_AUTH_SECRET
umask 022

submit() {
    # The drivers log at WARN like local runs; the daemons keep Spark's INFO default.
    if [ -f "$LENSPARK_HOME/conf/log4j2.properties" ]; then
        cp "$LENSPARK_HOME/conf/log4j2.properties" "$SPARK_CONF_DIR/"
    fi
    stages=${*:-$SPARK_STAGES}
    for stage in $stages; do
        case " $SPARK_STAGES " in
            *" $stage "*) ;;
            *) echo "error: unknown stage '$stage'; the Spark stages are: $SPARK_STAGES" >&2
               exit 2 ;;
        esac
    done

    python -m lenspark.bucket upload-raw --dataset "$DATASET" --bucket "$BUCKET_URI"

    # Executors connect back to the driver, so it advertises its address on the
    # compose network rather than a container ID that no other container resolves.
    driver_host=$(python -c 'import socket; print(socket.gethostbyname(socket.gethostname()))')
    for stage in $stages; do
        echo "spark-submit $stage on $DATASET"
        # SPARK_SUBMIT_ARGS is split into words on purpose, like the Makefile's variable.
        # shellcheck disable=SC2086
        spark-submit --master "$master_url" \
            --properties-file "$SPARK_CONF_DIR/spark-defaults.conf" \
            --conf "spark.driver.host=$driver_host" \
            --conf spark.driver.bindAddress=0.0.0.0 \
            ${SPARK_SUBMIT_ARGS:-} \
            "$LENSPARK_HOME/jobs/$stage.py" \
            --dataset "$DATASET" \
            --warehouse "s3a://$bucket/warehouse" \
            --reports "s3://$bucket/reports" \
            --movielens-dir "s3a://$bucket/raw/$DATASET"
    done
}

role=${1:-master}
[ "$#" -gt 0 ] && shift
case "$role" in
    master)
        exec spark-class org.apache.spark.deploy.master.Master \
            --host "${SPARK_MASTER_HOST:-spark-master}" --port 7077 --webui-port 8080 ;;
    worker)
        # Cores and memory come from SPARK_WORKER_CORES and SPARK_WORKER_MEMORY.
        exec spark-class org.apache.spark.deploy.worker.Worker --webui-port 8081 "$master_url" ;;
    history)
        exec spark-class org.apache.spark.deploy.history.HistoryServer ;;
    submit)
        submit "$@" ;;
    *)
        exec "$role" "$@" ;;
esac
