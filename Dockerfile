# The crm-kpi-stream image: the `crm-kpi` command (worker, simulator, replay).
#
#   docker build -t crm-kpi-stream .
#   docker run --rm crm-kpi-stream --help
#
# docker-compose.yml runs it as the worker and as the live simulator.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs, so that a change to the tests or the stack
# files does not invalidate the installed layer.
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY schemas ./schemas
RUN pip install .

# The worker keeps its local table data under var/ (CRM_DATA_DIR); run as an
# unprivileged user that owns it.
RUN useradd --create-home --uid 10001 crm \
    && mkdir -p /app/var \
    && chown crm:crm /app/var
USER crm

EXPOSE 6066
ENTRYPOINT ["crm-kpi"]
CMD ["worker"]
