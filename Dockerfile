# The funnel worker image (used by docker-compose.yml for the worker and the demo producer).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
RUN pip install --no-cache-dir .
RUN useradd --uid 10001 --no-create-home funnel && mkdir -p /app/.run && chown funnel /app/.run
USER 10001
# Serve on every interface of the container; other workers reach it by the
# name in FUNNEL_WEB_ADVERTISE (set per deployment).
ENV FUNNEL_WEB_BIND=0.0.0.0 \
    FUNNEL_RUN_DIR=/app/.run \
    FUNNEL_WEB_PORT=6066
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --retries=6 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:6066/health/live', timeout=2)" || exit 1
ENTRYPOINT ["funnel"]
CMD ["worker"]
