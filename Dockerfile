# syntax=docker/dockerfile:1
# One image for the API, the migration job and the workers.
# TORCH_INDEX_URL picks the PyTorch build: PyPI's default Linux wheel is the CUDA build (GPU
# workers); pass https://download.pytorch.org/whl/cpu for a smaller CPU-only image.

FROM python:3.11-slim AS build
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "$TORCH_INDEX_URL" --extra-index-url https://pypi.org/simple \
        torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY worker ./worker
COPY trainer ./trainer
RUN pip install .

FROM python:3.11-slim AS runtime
# espeak-ng synthesises the built-in spoken digits on first use (trainer/spoken_digits.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 tunery \
    && mkdir -p /data/artifacts /data/cache \
    && chown -R tunery:tunery /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/tunery
COPY alembic.ini ./
COPY migrations ./migrations
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TUNERY_ARTIFACT_DIR=/data/artifacts \
    TUNERY_CACHE_DIR=/data/cache \
    TUNERY_RUN_DIR=/tmp/tunery-runs
USER tunery
EXPOSE 8000
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000"]
