# Images for the project containers in compose.yaml: `sagactl <command>` is the entrypoint.
#   product (the default, last stage): the product's wheel alone, what production runs.
#   dev: the product plus the development harness (harness/), for the simulator containers
#        (`sagactl provider`, `sagactl smtp-sink`) that stand in for the outside world.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --no-create-home saga
WORKDIR /app

# Both wheels are built apart, so that no image holds the other's source.
FROM base AS wheels
COPY . /src
RUN pip wheel --no-deps --wheel-dir /wheels /src /src/harness

FROM base AS dev
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install /wheels/saga_outbox-*.whl /wheels/saga_outbox_harness-*.whl
USER saga
ENTRYPOINT ["sagactl"]
CMD ["--help"]

FROM base AS product
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    pip install /wheels/saga_outbox-*.whl
USER saga
ENTRYPOINT ["sagactl"]
CMD ["--help"]
