# Image for every project container in compose.yaml: `sagactl <command>` is the entrypoint.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home saga

USER saga
ENTRYPOINT ["sagactl"]
CMD ["--help"]
