# syntax=docker/dockerfile:1
# Worker (SDK harness) image for Dataflow, Flink and Spark: --sdk_container_image=IMAGE (Dataflow) or
# --environment_type=DOCKER --environment_config=IMAGE (portable runners). See "Running on a cluster" in README.md.
# Build from the repository root after `make wheel` (the image takes the project only as dist/'s wheel):
#   docker build -f docker/worker.Dockerfile -t REGISTRY/rightsize-worker:0.1.0 .
#   docker build -f docker/worker.Dockerfile --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       --build-arg EXTRAS=gcp -t REGISTRY/rightsize-worker:0.1.0-gpu .
# docker/worker.Dockerfile.dockerignore keeps the build context to the wheel (not .venv, runs/, bench/).

# Beam's own Python SDK image, same Beam and Python as the launcher (`rightsize label`): runners start its
# /opt/apache/beam/boot entrypoint, and a launcher/worker version mismatch fails at job start.
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}

# PyTorch index for torch: CPU wheels by default; for GPU workers a CUDA one
# (https://download.pytorch.org/whl/cu128 or whichever CUDA tag PyTorch publishes torch 2.13.0 for).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
# The project's object-store extra: gcp (gs:// via apache-beam[gcp] + gcsfs), aws (s3:// via apache-beam[aws]
# + s3fs), gcp,aws, or empty for none.
ARG EXTRAS=gcp

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, and only from the chosen PyTorch index: if the wheel's torch==2.13.0 requirement were left to
# PyPI, pip would fetch the default CUDA build (GBs of nvidia-* packages) even for CPU workers.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# The project wheel and its pinned dependencies from PyPI. torch==2.13.0 and apache-beam==2.77.* are already
# satisfied (by the step above and by the base image), so pip keeps both; `pip check` fails the build on a
# dependency conflict here rather than at worker start-up.
COPY dist/rightsize-*.whl /tmp/wheels/
RUN set -eux; \
    wheel="$(ls /tmp/wheels/rightsize-*.whl)"; \
    pip install "${wheel}${EXTRAS:+[${EXTRAS}]}"; \
    rm -rf /tmp/wheels; \
    pip check; \
    python -c "import apache_beam, models, ops, pipelines, torch; print('beam', apache_beam.__version__, 'torch', torch.__version__)"

# ENTRYPOINT stays the base image's /opt/apache/beam/boot: the runner starts the SDK harness through it.
